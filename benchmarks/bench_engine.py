"""How much the engine adds: the same model, data and steps through ``run_job`` and through a bare loop.

    python benchmarks/bench_engine.py                      # keras/mnist_convnet, MNIST-shaped data
    python benchmarks/bench_engine.py --model timm/resnet18 --repeats 5 --threads 1
    python benchmarks/bench_engine.py --device cuda       # both sides on the GPU, in the engine's precision

Training: the engine's train phase (every step, its optimiser/schedule set-up and bookkeeping included)
against a minimal hand-written PyTorch loop over pre-normalised float tensors, same optimiser and steps.
Inference: the engine's ``infer_throughput`` against a plain timing loop over the bare-trained model on the
same images, in the same mode (eval, ``inference_mode``, the engine's autocast) and timed the same way: the
host's clock after a synchronisation on the CPU, CUDA events on a GPU.

Like with like: one untimed round of both sides first, so that neither pays alone for what a process does
once (CUDA's lazy kernel loading, cuDNN's autotuning, the allocator's first blocks); then ``--repeats``
rounds, interleaved and alternating which side goes first. On a GPU the default data is 16 times larger, so
that a run lasts seconds rather than the launch jitter of a few hundred milliseconds. The median of the
paired ratios must be at most 1.05 for training and within 5% for inference (the ratio of the fastest runs
is printed too). Exits 1 when a target is missed. On a shared machine, ``--threads 1`` and more repeats
steady the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imgbench import LoadedDataset, Split  # noqa: E402
from imgbench.engine import run_job  # noqa: E402
from imgbench.engine.timing import WARMUP_SHARE, synchronize  # noqa: E402
from imgbench.engine.train import (FUSED_OPTIMIZER_DEVICES, choose_precision, seed_everything,  # noqa: E402
                                   select_device)
from imgbench.registry import get_registry  # noqa: E402

TRAIN_RATIO_TARGET = 1.05
INFER_AGREEMENT_TARGET = 0.05
CLASSES = 10
SEED = 0
TRAIN_IMAGES = 4096
GPU_DATA_FACTOR = 16  # a GPU runs the same steps about this much faster: more images, the same seconds


def synthetic_mnist(n_train: int, n_test: int, size: int) -> LoadedDataset:
    """MNIST-shaped uint8 data (one channel, ten classes); no validation split, so no val passes are timed."""
    rng = np.random.default_rng(SEED)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), np.arange(n) % CLASSES)

    return LoadedDataset("bench", tuple(map(str, range(CLASSES))), split(n_train), split(0), split(n_test),
                         "bench", "synthetic")


def build(model_name: str, size: int, device: torch.device, precision_name: str) -> torch.nn.Module:
    """The model as the engine builds and places it (Keras ones in the engine's device, dtype policy and
    layout; the .to() makes Keras models several % faster)."""
    from contextlib import nullcontext

    from imgbench.families.keras_models import build_scope

    scope = build_scope(str(device), precision_name) if model_name.startswith("keras/") else nullcontext()
    with scope:
        model = get_registry().build_model(model_name, num_classes=CLASSES, in_chans=1, image_size=size)
    keras_model = model_name.startswith("keras/")
    return model.to(device, memory_format=torch.preserve_format if keras_model else memory_format(device))


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format  # the engine's default


def engine_train(model: str, data: LoadedDataset, args: argparse.Namespace) -> dict:
    result = run_job(model, data, seed=SEED, progress=False, epochs=args.epochs, batch_size=args.batch_size,
                     optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="constant", warmup_epochs=0.0,
                     label_smoothing=0.0, augment="none", bench_seconds=args.bench_seconds, device=args.device)
    return result.metrics


def bare_train(model_name: str, data: LoadedDataset, args: argparse.Namespace) -> tuple[float, torch.nn.Module]:
    """Seconds for the same steps in the plainest loop (index, forward, loss, backward, step), and the model."""
    device = select_device(args.device)
    precision = choose_precision(device, amp=True)
    seed_everything(SEED, keras_model=model_name.startswith("keras/"))
    model = build(model_name, data.train.x.shape[1], device, precision.name)
    x = torch.from_numpy(data.train.x).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)
    x = x.to(device).clone(memory_format=memory_format(device))  # the strides the engine feeds
    y = torch.from_numpy(data.train.y).to(device)
    fused = True if device.type in FUSED_OPTIMIZER_DEVICES else None  # the engine's AdamW: one kernel per step
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0,
                                  fused=fused)
    steps = len(y) // args.batch_size
    synchronize(device)
    start = time.perf_counter()
    model.train()
    for _epoch in range(args.epochs):
        order = torch.randperm(len(y), device=device)
        for step in range(steps):
            index = order[step * args.batch_size:(step + 1) * args.batch_size]
            with precision.autocast():
                logits = model(x[index])
            loss = torch.nn.functional.cross_entropy(logits.float(), y[index])
            optimizer.zero_grad()
            precision.step(loss, optimizer)
    synchronize(device)
    return time.perf_counter() - start, model


def plain_inference(model: torch.nn.Module, data: LoadedDataset, args: argparse.Namespace) -> float:
    """Images/s of ``model(x)`` in eval mode under inference_mode on the engine's test images, after a warm-up
    as long as its; timed by CUDA events on a GPU (written here, not the engine's own timing code)."""
    device = select_device(args.device)
    precision = choose_precision(device, amp=True)
    images = data.test.x[: args.batch_size].astype(np.float32)
    images = (images - data.train.x.mean()) / data.train.x.std()
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).to(device).clone(memory_format=memory_format(device))
    model.eval()
    with torch.inference_mode(), precision.autocast():
        start = time.perf_counter()
        while time.perf_counter() - start < WARMUP_SHARE * args.bench_seconds:
            model(batch)
        synchronize(device)
        iterations, start = 0, time.perf_counter()
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        while time.perf_counter() - start < args.bench_seconds or iterations < 3:
            model(batch)
            iterations += 1
        if device.type == "cuda":
            end.record()
            end.synchronize()
            return iterations * args.batch_size / (begin.elapsed_time(end) / 1000)
        synchronize(device)
        return iterations * args.batch_size / (time.perf_counter() - start)


def bare_run(model_name: str, data: LoadedDataset, args: argparse.Namespace) -> tuple[float, float]:
    """The bare loop's training seconds and the plain loop's inference throughput on the model it trained."""
    seconds, model = bare_train(model_name, data, args)
    return seconds, plain_inference(model, data, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="keras/mnist_convnet")
    parser.add_argument("--train-images", type=int,
                        help=f"default {TRAIN_IMAGES}, {GPU_DATA_FACTOR} times as many on a GPU")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bench-seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N, for both sides")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = select_device(args.device).type == "cuda"
    args.train_images = args.train_images or TRAIN_IMAGES * (GPU_DATA_FACTOR if on_gpu else 1)
    data = synthetic_mnist(args.train_images, args.batch_size, args.image_size)
    engine_train(args.model, data, args)  # untimed: what a process does once happens here, for both sides
    bare_run(args.model, data, args)

    engine_s, bare_s, engine_infer, plain_infer = [], [], [], []
    for repeat in range(args.repeats):  # interleaved, alternating which goes first (the second runs warmer)
        if repeat % 2:
            bare = bare_run(args.model, data, args)
        metrics = engine_train(args.model, data, args)
        if not repeat % 2:
            bare = bare_run(args.model, data, args)
        engine_s.append(metrics["train_time_s"])
        engine_infer.append(metrics["infer_throughput"])
        bare_s.append(bare[0])
        plain_infer.append(bare[1])
        print(f"repeat {repeat + 1}: engine train {engine_s[-1]:.2f} s, bare {bare_s[-1]:.2f} s; "
              f"inference engine {engine_infer[-1]:.0f} img/s, plain {plain_infer[-1]:.0f} img/s", flush=True)

    # each engine run against the bare run beside it (same machine load), then the median over repeats
    ratio = statistics.median(e / b for e, b in zip(engine_s, bare_s))
    # each engine figure against the plain loop timed right after it, so both saw the same machine load
    agreement = statistics.median(e / p for e, p in zip(engine_infer, plain_infer)) - 1
    figures = {
        "model": args.model, "device": metrics["device"], "threads": torch.get_num_threads(),
        "steps": args.epochs * (args.train_images // args.batch_size), "batch_size": args.batch_size,
        "engine_train_s": engine_s, "bare_train_s": bare_s, "train_time_ratio": ratio,
        "train_time_ratio_fastest": min(engine_s) / min(bare_s),
        "engine_infer_per_s": statistics.median(engine_infer), "plain_infer_per_s": statistics.median(plain_infer),
        "infer_relative_difference": agreement, "engine_train_throughput": metrics["train_throughput"],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        from imgbench.paths import atomic_write_json

        atomic_write_json(args.json, figures)
    ok = ratio <= TRAIN_RATIO_TARGET and abs(agreement) <= INFER_AGREEMENT_TARGET
    print(f"train time ratio {ratio:.3f} (target <= {TRAIN_RATIO_TARGET}), inference difference "
          f"{agreement:+.1%} (target within {INFER_AGREEMENT_TARGET:.0%}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
