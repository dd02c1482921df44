"""The example plugin's own tests: imgbench's conformance checks, one pytest item per (model, shape, check).

Run them with the package installed: ``pip install -e './plugins/example-package[test]'`` then
``pytest plugins/example-package``.
"""

from imgbench.conformance import parametrize_with_checks


@parametrize_with_checks(["example/mlp"])
def test_example_models_conform(model_check):
    model_check()
