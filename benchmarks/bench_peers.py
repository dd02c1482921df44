"""imgbench's speed figures against timm's own ``benchmark.py`` method, in one interleaved run.

    python benchmarks/bench_peers.py                                   # timm/resnet18, batch 128, 32 px, CPU
    python benchmarks/bench_peers.py --rounds 5 --threads 2 --json peers.json
    python benchmarks/bench_peers.py --only train --rounds 9          # training alone: more rounds, same time

timm ships ``benchmark.py`` as a script at the root of its repository, not as importable code, so its method
is re-implemented here (``timm_infer`` and ``timm_train``, read from timm's InferenceBenchmarkRunner and
TrainBenchmarkRunner): the model from ``timm.create_model`` (1000 classes, ``global_pool="fast"``), one
``torch.randn`` batch made once, ``torch.inference_mode()`` for inference, ``--timm-warm`` warm-up steps
(timm: 10) and ``--timm-iters`` timed steps (timm: 40), samples/s = timed samples / wall time of the timed
steps; training: SGD (momentum 0.9, Nesterov, lr 1e-4, what timm's ``create_optimizer_v2('sgd')`` builds),
``zero_grad``, forward, cross-entropy on random targets, backward, step.

Each round measures, interleaved (the order flips every round, so neither side always runs warmer):

- inference on timm's model and input by timm's method, by imgbench's ``timing.inference_throughput``, by
  imgbench's under ``no_grad`` (what it timed before), and by a bare ``no_grad`` loop: the methods alone;
- the same on the model imgbench builds (10 classes) with imgbench's normalised images: the model and input;
- ``run_job`` itself on synthetic CIFAR-shaped data: its ``infer_throughput`` and ``train_throughput``;
- training by timm's method (on timm's model and on imgbench's) and by a bare loop over the engine's data.

``--only infer`` or ``--only train`` keeps one side (the ``run_job`` case stays: it gives both figures).

It prints each round's figures and the median of the paired ratios (each ratio between figures of the same
round); exits 1 when imgbench's method and timm's disagree by more than ``AGREEMENT`` on the same model and
input. Precision is fp32 throughout (the engine's CPU precision).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imgbench import LoadedDataset, Split  # noqa: E402
from imgbench.engine import run_job, timing  # noqa: E402
from imgbench.engine.data import ImageBatches, channel_stats  # noqa: E402
from imgbench.registry import get_registry  # noqa: E402

AGREEMENT = 0.03  # |imgbench / timm - 1| on the same model and input
CLASSES = 10
SEED = 0
CPU = torch.device("cpu")
TIMM_LR = 1e-4  # timm benchmark.py's TrainBenchmarkRunner default
# the ratios reported: name -> (numerator, denominator), both figures from the same round
RATIOS = {
    "infer imgbench / timm (same model, input)": ("infer.imgbench", "infer.timm"),
    "infer imgbench under no_grad / timm": ("infer.imgbench_no_grad", "infer.timm"),
    "infer bare no_grad / timm": ("infer.bare", "infer.timm"),
    "infer imgbench / timm on imgbench's model and images": ("infer.imgbench_engine_model", "infer.timm_engine_model"),
    "infer timm: imgbench's model+images / timm's": ("infer.timm_engine_model", "infer.timm"),
    "infer run_job / timm on imgbench's model and images": ("infer.job", "infer.timm_engine_model"),
    "infer run_job / timm (as timm's script reports)": ("infer.job", "infer.timm"),
    "train run_job / timm on imgbench's model": ("train.job", "train.timm_engine_model"),
    "train run_job / timm (as timm's script reports)": ("train.job", "train.timm"),
    "train bare loop / timm on imgbench's model": ("train.bare", "train.timm_engine_model"),
}
GATED = ("infer imgbench / timm (same model, input)", "train run_job / timm on imgbench's model")


# -- timm benchmark.py's method ----------------------------------------------------------------------------

def timed_loop(model: torch.nn.Module, x: torch.Tensor, warm: int, iters: int, grad_mode=torch.inference_mode) -> float:
    """Images per second of ``iters`` forward passes after ``warm`` untimed ones, in eval mode under ``grad_mode``."""
    model.eval()
    with grad_mode():
        for _ in range(warm):
            model(x)
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        return iters * len(x) / (time.perf_counter() - start)


def timm_infer(model: torch.nn.Module, x: torch.Tensor, warm: int, iters: int) -> float:
    """InferenceBenchmarkRunner.run on the CPU: inference_mode, per-step timestamps, samples / run time."""
    return timed_loop(model, x, warm, iters, torch.inference_mode)


def timm_train(model: torch.nn.Module, x: torch.Tensor, num_classes: int, warm: int, iters: int) -> float:
    """TrainBenchmarkRunner.run on the CPU: SGD, zero_grad, forward, CE on random targets, backward, step."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=TIMM_LR, momentum=0.9, nesterov=True)

    def step() -> None:
        optimizer.zero_grad()
        output = model(x)
        target = torch.empty(len(x), dtype=torch.long).random_(num_classes)
        loss_fn(output, target).backward()
        optimizer.step()

    for _ in range(warm):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * len(x) / (time.perf_counter() - start)


# -- imgbench's method and a bare loop ---------------------------------------------------------------------

def no_grad_forward(model: torch.nn.Module):
    """The call the engine timed before it used inference_mode."""
    model.eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(batch)

    return forward


def imgbench_infer(model: torch.nn.Module, x: torch.Tensor, seconds: float, no_grad: bool = False) -> float:
    """imgbench's timing method around its own forward (inference_mode), or around the no_grad call."""
    forward = no_grad_forward(model) if no_grad else timing.inference_forward(model, nullcontext)
    return timing.inference_throughput(forward, x, CPU, seconds)["infer_throughput"]


def bare_infer(model: torch.nn.Module, x: torch.Tensor, warm: int, iters: int) -> float:
    """The plain loop most people write: no_grad instead of inference_mode."""
    return timed_loop(model, x, warm, iters, torch.no_grad)


def bare_train(model: torch.nn.Module, batches: ImageBatches, batch: int, warm: int, iters: int) -> float:
    """Index a batch of the engine's uint8 data, normalise, forward, backward, step: the plainest loop."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=TIMM_LR, momentum=0.9, nesterov=True)
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(SEED))

    def step(i: int) -> None:
        index = order[(i * batch) % (len(batches) - batch + 1):][:batch]
        loss = torch.nn.functional.cross_entropy(model(batches.inputs(batches.x[index])), batches.y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for i in range(warm):
        step(i)
    start = time.perf_counter()
    for i in range(iters):
        step(warm + i)
    return iters * batch / (time.perf_counter() - start)


def synthetic_cifar(n_train: int, n_test: int, size: int) -> LoadedDataset:
    rng = np.random.default_rng(SEED)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % CLASSES)

    return LoadedDataset("bench", tuple(map(str, range(CLASSES))), split(n_train), split(0), split(n_test),
                         "bench", "synthetic")


def job_figures(model: str, data: LoadedDataset, args: argparse.Namespace) -> tuple[float, float]:
    metrics = run_job(model, data, seed=SEED, progress=False, epochs=1, batch_size=args.batch, optimizer="sgd",
                      lr=TIMM_LR, momentum=0.9, weight_decay=0.0, schedule="constant", warmup_epochs=0.0,
                      label_smoothing=0.0, augment="none", bench_seconds=args.bench_seconds,
                      threads=torch.get_num_threads()).metrics
    return metrics["infer_throughput"], metrics["train_throughput"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm/resnet18", help="a timm/... model of imgbench's registry")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--bench-seconds", type=float, default=2.0, help="imgbench's bench_seconds")
    parser.add_argument("--timm-warm", type=int, default=10, help="timm benchmark.py --num-warm-iter")
    parser.add_argument("--timm-iters", type=int, default=40, help="timm benchmark.py --num-bench-iter")
    # 6,144 images at batch 128: run_job times 43 steps (48 less its 5 warm-up steps), about timm's 40; with
    # 2,048 (11 timed steps) single rounds swung by +-20% and a 5-round median read 1.10
    parser.add_argument("--train-images", type=int, default=6144, help="run_job's training images")
    parser.add_argument("--only", choices=("infer", "train"), help="measure only inference or only training")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    timm_name = args.model.removeprefix("timm/")
    timm_model = timm.create_model(timm_name, global_pool="fast")  # as benchmark.py builds it: 1000 classes
    engine_model = get_registry().build_model(args.model, num_classes=CLASSES, in_chans=3, image_size=args.size)
    randn = torch.randn(args.batch, 3, args.size, args.size)
    data = synthetic_cifar(args.train_images, args.batch, args.size)
    mean, std = channel_stats(data.train.x)
    train_batches = ImageBatches(data.train, CPU, mean, std, torch.contiguous_format, True)
    images = train_batches.inputs(train_batches.x[: args.batch])
    warm, iters, seconds = args.timm_warm, args.timm_iters, args.bench_seconds

    def measured(key: str) -> bool:
        """Whether ``infer.*`` / ``train.*`` is on the side ``--only`` keeps."""
        return args.only in (None, key.split(".")[0])

    def job() -> dict[str, float]:
        infer, train = job_figures(args.model, data, args)  # one job gives both figures; --only keeps one
        return {key: value for key, value in (("infer.job", infer), ("train.job", train)) if measured(key)}

    cases = [  # (what it measures, the case); run_job measures both
        ("infer", lambda: {"infer.timm": timm_infer(timm_model, randn, warm, iters)}),
        ("infer", lambda: {"infer.imgbench": imgbench_infer(timm_model, randn, seconds)}),
        ("infer", lambda: {"infer.imgbench_no_grad": imgbench_infer(timm_model, randn, seconds, no_grad=True)}),
        ("infer", lambda: {"infer.bare": bare_infer(timm_model, randn, warm, iters)}),
        ("infer", lambda: {"infer.timm_engine_model": timm_infer(engine_model, images, warm, iters)}),
        ("infer", lambda: {"infer.imgbench_engine_model": imgbench_infer(engine_model, images, seconds)}),
        ("both", job),
        ("train", lambda: {"train.timm": timm_train(timm_model, randn, 1000, warm, iters)}),
        ("train", lambda: {"train.timm_engine_model": timm_train(engine_model, images, CLASSES, warm, iters)}),
        ("train", lambda: {"train.bare": bare_train(engine_model, train_batches, args.batch, warm, iters)}),
    ]
    cases = [case for kind, case in cases if kind == "both" or measured(kind)]
    ratio_pairs = {name: pair for name, pair in RATIOS.items() if measured(pair[0])}
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        figures: dict[str, float] = {}
        for case in cases if index % 2 == 0 else cases[::-1]:
            figures.update(case())
        rounds.append(figures)
        print(f"round {index + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
        print("  ratios: " + "; ".join(f"{name} {figures[a] / figures[b]:.3f}" for name, (a, b) in ratio_pairs.items()),
              flush=True)

    ratios = {name: statistics.median(r[a] / r[b] for r in rounds) for name, (a, b) in ratio_pairs.items()}
    result = {"model": args.model, "timm_model": timm_name, "batch": args.batch, "size": args.size,
              "threads": torch.get_num_threads(), "precision": "fp32", "rounds": rounds,
              "median_paired_ratios": ratios, "medians": {k: statistics.median(r[k] for r in rounds)
                                                          for k in rounds[0]},
              "load_average": os.getloadavg(), "torch": torch.__version__, "timm": timm.__version__}
    print(json.dumps({k: result[k] for k in ("threads", "median_paired_ratios", "medians", "load_average")},
                     indent=2))
    if args.json:
        from imgbench.paths import atomic_write_json

        atomic_write_json(args.json, result)
    misses = [name for name in GATED if name in ratios and abs(ratios[name] - 1) > AGREEMENT]
    print(f"agreement within {AGREEMENT:.0%}: " + ("PASS" if not misses else f"FAIL ({'; '.join(misses)})"))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
