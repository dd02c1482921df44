"""``imgbench infer``: the inference benchmark (``plan`` checks the options, ``sweep`` measures, ``runtimes``
prepares a model in eager, torch.compile or ONNX Runtime, ``table`` writes inference.csv, ``allocator`` pins
glibc's malloc thresholds while timing). Importing the package imports nothing heavy."""
