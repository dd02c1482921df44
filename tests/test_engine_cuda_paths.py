"""The CUDA paths' mechanisms, shown on the CPU: Keras' device, mixed precision for both families, no host
syncs in a training step, device-independent FLOPs, the training-memory accounting, compile shapes, and the
bf16/fp16 decision. What only a GPU can show is in test_engine_gpu.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgbench.engine import run_job
from imgbench.engine.data import Augmenter, ImageBatches
from imgbench.engine.recipe import resolve_recipe
from imgbench.engine.timing import MIB, PeakMemory, activation_dtypes, count_flops, ran_in
from imgbench.engine.train import Precision, TrainStep, choose_precision, warm_compile
from imgbench.registry import get_registry

from test_engine import synthetic

TINY = dict(epochs=1, batch_size=16, bench_seconds=0.02, progress=False)
HOST_SYNC = "aten::_local_scalar_dense"  # what .item(), int(), bool() and nonzero sizes all go through


def build(name: str, size: int, channels: int = 1, classes: int = 5, engine: bool = False) -> torch.nn.Module:
    """The registry's model; ``engine``: built as a job builds it (Keras in the engine's scope, on the CPU)."""
    from contextlib import nullcontext

    from imgbench.families.keras_models import build_scope

    with build_scope("cpu", "fp32") if engine and name.startswith("keras/") else nullcontext():
        return get_registry().build_model(name, num_classes=classes, in_chans=channels, image_size=size)


def host_syncs(step, outside_optimizer: bool = False) -> int:
    """How many device-to-host reads ``step()`` makes, as torch's profiler counts them.

    ``outside_optimizer``: leave out reads inside ``optimizer.step``. On the CPU torch's optimisers read their
    step counters as host scalars (the fused CPU kernel too); on CUDA the fused kernels keep them on the
    device, which test_engine_gpu.py checks by counting every read.
    """
    from torch.profiler import ProfilerActivity, profile

    def in_optimizer(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("Optimizer.step"):
                return True
            parent = parent.cpu_parent
        return False

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for event in prof.events()
               if event.name == HOST_SYNC and not (outside_optimizer and in_optimizer(event)))


# -- 1. Keras computes on the engine's device ---------------------------------------------------------------
@pytest.fixture
def keras_elsewhere(monkeypatch):
    """Keras' default device set to ``meta``, as a GPU host sets it to "cuda" for a job asked to run on the CPU."""
    import keras  # noqa: F401
    from keras.src.backend.torch import core

    monkeypatch.setattr(core, "DEFAULT_DEVICE", "meta")


def test_keras_default_device_is_really_forced_elsewhere(keras_elsewhere):
    # the control: without the engine's scopes a Keras model lands on Keras' device, not the caller's
    net = build("keras/mnist_convnet", 12)
    assert {p.device.type for p in net.parameters()} == {"meta"}


def test_keras_jobs_build_and_run_on_the_engines_device(keras_elsewhere):
    from imgbench.families.keras_models import build_scope

    with build_scope("cpu", "fp32"):
        net = build("keras/mnist_convnet", 12)
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    net.train()
    out = net(torch.randn(4, 1, 12, 12))  # training mode: dropout draws its mask on the inputs' device
    assert out.device.type == "cpu" and torch.isfinite(out).all()

    # asked for the CPU: on a machine with a GPU, device=auto would rightly pick the GPU
    result = run_job("keras/mnist_convnet", synthetic(per_class=(8, 2, 4), size=12), seed=0, device="cpu", **TINY)
    assert result.status == "ok" and result.metrics["device"] == "cpu"
    assert np.isfinite(result.predictions.filter(like="p_").to_numpy()).all()


# -- 2. mixed precision means the same for both families ----------------------------------------------------
@pytest.fixture
def bf16_on_cpu(monkeypatch):
    """The engine's bf16 choice on the CPU (CPU autocast has bf16; the engine uses it on CUDA only)."""
    import imgbench.engine.train as train

    monkeypatch.setattr(train, "choose_precision", lambda device, amp: Precision(device.type, torch.bfloat16))


@pytest.mark.parametrize("model", ["keras/mnist_convnet", "timm/resnet18"])
def test_amp_runs_both_families_in_bf16_and_records_what_ran(model, bf16_on_cpu, tmp_path):
    result = run_job(model, synthetic(per_class=(8, 2, 4), size=16, channels=3), seed=0, out_dir=tmp_path, **TINY)
    metrics = result.metrics
    assert result.status == "ok" and metrics["precision_requested"] == "bf16"
    assert metrics["precision"] == "bf16" and metrics["activation_dtypes"]["bf16"] > 0.9
    from imgbench.schema import RESULT_COLUMNS as COLUMNS

    assert "precision" in COLUMNS and "train_peak_memory_mb" in COLUMNS


def test_keras_float32_policy_under_autocast_stays_mostly_fp32_and_the_mixed_policy_does_not():
    from imgbench.families.keras_models import build_scope

    autocast = Precision("cpu", torch.bfloat16).autocast
    image = torch.randn(1, 3, 16, 16)
    with build_scope("cpu", "fp32"):
        plain = build("keras/mnist_convnet", 16, channels=3)
    with build_scope("cpu", "bf16"):
        mixed = build("keras/mnist_convnet", 16, channels=3)
    # the issue: under autocast alone a Keras model's layers cast back to float32 after each matmul
    plain_shares, mixed_shares = activation_dtypes(plain, image, autocast), activation_dtypes(mixed, image, autocast)
    assert plain_shares["fp32"] > 0.2 and ran_in(plain_shares) == "mixed"
    assert mixed_shares["bf16"] > 0.99 and ran_in(mixed_shares) == "bf16"
    assert {p.dtype for p in mixed.parameters() if p.is_floating_point()} == {torch.float32}  # master weights
    with torch.no_grad(), autocast():
        assert mixed(image).dtype == torch.bfloat16


def test_metrics_are_computed_from_float32_logits():
    from imgbench.engine.evaluate import predict_logits

    data = synthetic(per_class=(4, 1, 3), size=8)
    batches = ImageBatches(data.test, torch.device("cpu"), np.zeros(1), np.ones(1), torch.contiguous_format, True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    logits = predict_logits(model, batches, 4, Precision("cpu", torch.bfloat16).autocast)
    assert logits.dtype == torch.float32 and logits.shape == (len(data.test), 5)


# -- 3. no host syncs in a training step --------------------------------------------------------------------
def test_the_sync_count_sees_a_sync():
    x = torch.ones(3)
    assert host_syncs(lambda: x.sum().item()) == 1 and host_syncs(lambda: x * 2) == 0


def _train_step(net: torch.nn.Module, size: int, channels: int):
    device = torch.device("cpu")
    recipe = resolve_recipe("cifar10", {"optimizer": "adamw", "augment": "flip_crop"})
    step = TrainStep(net, recipe, Precision("cpu"), 10, Augmenter("flip_crop", size, device, 0, torch.contiguous_format))
    step.reset_totals(device)
    x, y = torch.randn(4, channels, size, size), torch.arange(4) % 5
    net.train()
    step(x, y)  # the first step creates the optimiser state
    return lambda: step(x, y)


@pytest.mark.parametrize("model, size", [
    ("keras/mnist_convnet", 16),
    ("timm/resnet18", 16),
    pytest.param("keras/efficientnet_b0", 32, marks=pytest.mark.slow),  # seeded drop-connect in 9 blocks
])
def test_a_training_step_of_each_family_makes_no_host_sync(model, size):
    step = _train_step(build(model, size, 3, engine=True), size, 3)
    assert host_syncs(step, outside_optimizer=True) == 0
    assert scalar_copies(step) == 0  # each would be a copy to the GPU and a host sync there


def test_keras_seeded_dropout_syncs_and_the_engines_replacement_keeps_its_shape_and_scale():
    import keras

    from imgbench.wrappers import KerasModule

    def drop_path_net():  # EfficientNet's drop-connect: one keep/drop decision per sample
        return keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Dropout(0.25, noise_shape=(None, 1, 1, 1))])

    x = torch.ones(2000, 4, 4, 8)
    assert host_syncs(lambda: drop_path_net()(x, training=True)) > 0  # Keras' own: int(seed) per call
    wrapped = KerasModule(drop_path_net()).train()
    assert host_syncs(lambda: wrapped(x.permute(0, 3, 1, 2))) == 0
    out = wrapped(x.permute(0, 3, 1, 2))
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # whole samples kept or dropped
    assert per_sample[:, 0].unique().tolist() == [0.0, pytest.approx(1 / 0.75)]  # kept ones scaled by 1 / keep
    assert abs((per_sample[:, 0] > 0).double().mean().item() - 0.75) < 0.05
    assert torch.equal(wrapped.eval()(x.permute(0, 3, 1, 2)), x)  # eval: the identity (output is NHWC)


def scalar_copies(call) -> int:
    """How many Python scalars ``call()`` turns into tensors: on CUDA each is a copy from the host and a host sync."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        found = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.as_tensor and args and isinstance(args[0], (bool, int, float)):
                Count.found += 1
            return func(*args, **(kwargs or {}))

    with Count():
        call()
    return Count.found


def test_keras_rescaling_and_normalization_copy_no_scalar_to_the_device_and_compute_what_keras_does():
    import keras

    from imgbench.wrappers import KerasModule

    def preprocessing():  # EfficientNet's first layers
        return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255, offset=-0.5),
                                 keras.layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[0.5, 1.0, 2.0])])

    x = torch.rand(2, 4, 4, 3) * 255
    expected = preprocessing()(x)
    assert scalar_copies(lambda: preprocessing()(x)) == 3  # Keras' own: scale, offset, epsilon on every call
    wrapped = KerasModule(preprocessing())
    assert scalar_copies(lambda: wrapped(x.permute(0, 3, 1, 2))) == 0
    torch.testing.assert_close(wrapped(x.permute(0, 3, 1, 2)), torch.as_tensor(expected))


# -- 5. figures that do not depend on where they were counted -----------------------------------------------
def test_vit_flops_include_attention_as_the_formula_counts_it():
    vit = build("timm/vit_tiny", 16, channels=3, classes=10)
    patch, dim, depth, classes = vit.patch_embed.patch_size[0], vit.embed_dim, len(vit.blocks), 10
    assert (patch, dim, depth) == (2, 192, 12)
    patches = (16 // patch) ** 2
    tokens = patches + 1  # the class token
    embed = 2 * patches * dim * patch * patch * 3
    qkv, proj, mlp = 2 * tokens * dim * 3 * dim, 2 * tokens * dim * dim, 2 * 2 * tokens * dim * 4 * dim
    attention = 2 * 2 * tokens * tokens * dim  # q @ k^T and attn @ v, over all heads
    expected = embed + depth * (qkv + attention + proj + mlp) + 2 * dim * classes
    assert count_flops(vit, torch.randn(1, 3, 16, 16), Precision("cpu").autocast) == expected


class FakeAllocator:
    """Stands in for torch.cuda's allocator statistics: allocations, frees and a resettable peak."""

    def __init__(self) -> None:
        self.allocated = self.peak = 0

    def alloc(self, mib: int) -> None:
        self.allocated += mib * MIB
        self.peak = max(self.peak, self.allocated)

    def free(self, mib: int) -> None:
        self.allocated -= mib * MIB

    def reset_peak_memory_stats(self, device) -> None:
        self.peak = self.allocated

    def max_memory_allocated(self, device) -> int:
        return self.peak


def test_training_peak_leaves_out_the_data_on_the_device_and_autotuning():
    fake = FakeAllocator()
    memory = PeakMemory(torch.device("cuda"), allocator=fake)
    fake.alloc(100)  # the dataset, held on the device
    memory.exclude(100 * MIB)
    fake.alloc(50)  # model, gradients and optimiser state
    fake.alloc(700)  # cuDNN autotuning trials in the first steps
    fake.free(700)
    for activations in (200, 300):  # two epochs' steady windows, each with validation after it
        memory.start_window()
        fake.alloc(activations)
        fake.free(activations)
        memory.end_window()
        fake.alloc(400)  # evaluation's own peak, outside the window
        fake.free(400)
    assert memory.peak_mb() == 850  # the whole job: data + model + autotuning
    assert memory.train_peak_mb() == 50 + 300  # the model's training peak


def test_training_peak_is_none_where_there_is_no_allocator():
    memory = PeakMemory(torch.device("cpu"))
    memory.start_window()
    memory.end_window()
    assert memory.train_peak_mb() is None and memory.peak_mb() > 0


def test_warm_compile_covers_every_shape_the_job_feeds_the_compiled_model():
    from imgbench.engine.evaluate import predict_logits

    compiles = []

    def counting_backend(graph, example_inputs):
        compiles.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return graph.forward

    def run(eval_sizes):
        torch._dynamo.reset()
        compiles.clear()
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 5))
        compiled = torch.compile(net, backend=counting_backend)
        cpu, precision = torch.device("cpu"), Precision("cpu")
        data = synthetic(per_class=(7, 3, 5), size=8)  # 35 train, 15 val, 25 test images
        train, val, test = (ImageBatches(s, cpu, np.zeros(1), np.ones(1), torch.contiguous_format, True)
                            for s in (data.train, data.val, data.test))
        sizes = sorted({*val.batch_sizes(16), *test.batch_sizes(16), 16, 1}) if eval_sizes else ()
        warm_compile(net, compiled, train, 16, precision, sizes)
        warmed = len(compiles)
        compiled.train()
        for x, y in train.batches(16, torch.Generator().manual_seed(0), drop_last=True):
            torch.nn.functional.cross_entropy(compiled(x), y).backward()
        predict_logits(compiled, val, 16, precision.autocast)  # one batch of 15
        predict_logits(compiled, test, 16, precision.autocast)  # 16, then a remainder of 9
        with torch.no_grad():
            compiled.eval()(test.inputs(test.x[:1]))  # batch-1 latency
        return warmed, len(compiles)

    warmed, total = run(eval_sizes=False)
    assert total > warmed  # the control: remainder and batch-1 shapes recompile after the warm-up
    warmed, total = run(eval_sizes=True)
    assert total == warmed


# -- 6. bf16 only where the hardware has it -----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_needs_compute_capability_8_else_fp16_with_a_grad_scaler(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # emulation
    precision = choose_precision(torch.device("cuda"), amp=True)
    assert precision.dtype == expected
    assert (precision.scaler is not None) == (expected == torch.float16)
    assert choose_precision(torch.device("cuda"), amp=False).dtype is None



# -- issue 10: the engine's Keras layout -------------------------------------------------------------------
def test_the_engines_channels_first_keras_model_computes_what_keras_default_one_does():
    import keras

    from imgbench.families.keras_models import build_scope

    default = build("keras/mnist_convnet", 16, channels=3)  # Keras' defaults: channels-last, float32
    with build_scope("cpu", "fp32"):
        engine = build("keras/mnist_convnet", 16, channels=3)
    assert engine.channels_first and not default.channels_first
    assert keras.config.image_data_format() == "channels_last" and keras.config.dtype_policy().name == "float32"
    for target, source in zip(engine.net.weights, default.net.weights, strict=True):  # same layers and shapes
        target.assign(source.value)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(engine.eval()(x), default.eval()(x), rtol=1e-5, atol=1e-5)
