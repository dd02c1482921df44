"""The runtimes a built model is timed in, each behind one small interface: a ``forward`` to time and
``logits`` to compare.

- ``eager``: the module as built, under ``inference_mode`` and autocast (``timing.inference_forward``), as
  the training engine times it.
- ``compile``: ``torch.compile`` with static shapes (as a deployment at a fixed batch size compiles it): each
  batch size compiles its own graph on its first call, whose time is that row's compile time, apart from the
  timing. Dynamo's caches are cleared for each model and precision, so no earlier graph is reused.
- ``onnxruntime``: exported with ``torch.onnx.export`` (dynamo, a dynamic batch axis) and run in an ONNX
  Runtime session on the CPU execution provider, or CUDA's on a GPU (inputs and outputs bound on the device).
  ONNX has no autocast: bf16 and fp16 export the model and feed inputs cast to that dtype.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from imgbench.engine import timing

EXPORT_BATCH = 2  # the example batch of the export: 1 would let the exporter specialise the batch axis
COMPILED_SHAPES = 64  # graphs dynamo keeps per model (one per batch size); its default, 8, would fall back to eager
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Prepared:
    """A model ready to time in one runtime and precision."""

    forward: Callable[[torch.Tensor], Any]  # the timed call
    logits: Callable[[torch.Tensor], torch.Tensor]  # float32 logits on the CPU, for the agreement
    version: str  # the runtime as it ran, for the table
    compile_time_s: float | None = None  # time spent before the first timed call (onnxruntime: export + session)
    per_batch_compile: bool = False  # compile: each new batch size compiles on its first call

    def first_call(self, batch: torch.Tensor, device: torch.device) -> float | None:
        """Run the first call at a new batch size; its seconds when that call compiles, else None."""
        start = time.perf_counter()
        self.forward(batch)
        timing.synchronize(device)
        return time.perf_counter() - start if self.per_batch_compile else None


def autocast_for(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """The engine's precision object for ``precision`` (autocast; off for fp32)."""
    from imgbench.engine.train import Precision

    dtype = DTYPES[precision]
    return Precision(device.type, None if dtype is torch.float32 else dtype).autocast


def _cpu_logits(forward: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    def logits(x: torch.Tensor) -> torch.Tensor:
        return forward(x).float().cpu()

    return logits


def prepare_eager(model: torch.nn.Module, device: torch.device, precision: str, threads: int,
                  example: torch.Tensor) -> Prepared:
    forward = timing.inference_forward(model, autocast_for(device, precision))
    return Prepared(forward, _cpu_logits(forward), f"torch {torch.__version__} eager")


def prepare_compile(model: torch.nn.Module, device: torch.device, precision: str, threads: int,
                    example: torch.Tensor) -> Prepared:
    torch._dynamo.reset()  # no graph of an earlier model or precision is reused
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_SHAPES)
    compiled: Any = torch.compile(model, dynamic=False)  # an OptimizedModule: a Module, typed loosely
    forward = timing.inference_forward(compiled, autocast_for(device, precision))
    return Prepared(forward, _cpu_logits(forward), f"torch {torch.__version__} compile (inductor)",
                    per_batch_compile=True)


def prepare_onnxruntime(model: torch.nn.Module, device: torch.device, precision: str, threads: int,
                        example: torch.Tensor) -> Prepared:
    """Export ``model`` (cast to ``precision``) and open a session on ``device``'s execution provider."""
    import onnxruntime

    start = time.perf_counter()
    dtype = DTYPES[precision]
    exported = model.to(dtype).eval()  # built for this runtime and precision alone: cast in place
    with tempfile.TemporaryDirectory(prefix="imgbench-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(exported, (example[:EXPORT_BATCH].to(dtype),), str(path), dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        provider_options = {"device_id": device.index or 0} if device.type == "cuda" else {}
        session = onnxruntime.InferenceSession(str(path), options, providers=[(provider, provider_options)])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"onnxruntime did not take {provider}: it runs on {session.get_providers()}")
    version = f"onnxruntime {onnxruntime.__version__} {provider}"
    run = _bound_run(session, device) if device.type == "cuda" else _host_run(session)

    def forward(x: torch.Tensor) -> Any:
        return run(x.to(dtype))

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        return torch.from_numpy(out.numpy() if hasattr(out, "numpy") else out).float()

    return Prepared(forward, logits, version, compile_time_s=time.perf_counter() - start)


def _host_run(session: Any) -> Callable[[torch.Tensor], Any]:
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Any:
        return session.run(None, {name: x.contiguous().numpy()})[0]

    return run


def _bound_run(session: Any, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """Inputs and outputs bound on the GPU (no host copies in the timed call); returns the output OrtValue."""
    import numpy as np

    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    element = {torch.float32: np.float32, torch.float16: np.float16}  # numpy has no bfloat16 to bind with

    def run(x: torch.Tensor) -> Any:
        if x.dtype not in element:
            raise RuntimeError(f"{x.dtype} inputs cannot be bound to ONNX Runtime's CUDA provider from numpy")
        x = x.contiguous()
        binding = session.io_binding()
        binding.bind_input(name, "cuda", device.index or 0, element[x.dtype], tuple(x.shape), x.data_ptr())
        binding.bind_output(output, "cuda", device.index or 0)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    return run


# runtime -> how to prepare a model in it: (model, device, precision, threads, example batch) -> Prepared
RUNTIMES: dict[str, Callable[[torch.nn.Module, torch.device, str, int, torch.Tensor], Prepared]] = {
    "eager": prepare_eager, "compile": prepare_compile, "onnxruntime": prepare_onnxruntime}
