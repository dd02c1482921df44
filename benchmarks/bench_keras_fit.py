"""Keras models through the engine against Keras' own ``model.fit``: same model, data, batch, optimiser, steps.

    python benchmarks/bench_keras_fit.py --data-dir ../shared/data --rounds 5 --threads 2 --json fit.json

Both sides train the same Keras model (built by the registry's builder, so the same layers, weights shapes and
math) on the same MNIST images in the same process with the same torch threads: the engine through
``run_job`` (its ``train_throughput``; it builds Keras models channels-first, the layout that the torch
backend runs without transposes), Keras through ``model.fit`` on the model as Keras builds it by default
(channels-last; ``--fit-layout channels_first`` for the engine's layout) and the same images as normalised
float32 arrays,
with Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), no weight decay, no schedule, no augmentation, sparse
cross-entropy on the logits and an accuracy metric (the engine tracks loss and accuracy too). Throughput is
steady state on both sides, measured the same way: every epoch's steps except the first ``SKIP_STEPS`` steps
of the run. One round runs both, alternating which goes first; the figure is the median over rounds of
the paired ratios engine / Keras. Target: at least ``TARGET`` (exit 1 below it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from imgbench import LoadedDataset, Split  # noqa: E402
from imgbench.engine import run_job  # noqa: E402
from imgbench.engine.data import channel_stats  # noqa: E402
from imgbench.engine.timing import synchronize  # noqa: E402
from imgbench.engine.train import SKIP_STEPS, seed_everything  # noqa: E402
from imgbench.schema import Status  # noqa: E402

TARGET = 1.1
SEED = 0
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8  # torch's Adam default; Keras' is 1e-7
TEST_IMAGES = 256  # the engine's test and timing phases are not part of the ratio; keep them short


def mnist(args: argparse.Namespace) -> LoadedDataset:
    """Real MNIST (``--data-dir``, a subset of ``--train-images``) or MNIST-shaped random images."""
    if args.data_dir:
        from imgbench.engine.data import stratified_subset
        from imgbench.registry import get_registry

        spec, _ = get_registry().dataset("mnist")
        loaded = spec.load(image_size=0, val_size=0.0, data_dir=args.data_dir, cache_dir=args.cache_dir, arg="")
        train, _ = stratified_subset(loaded.train, args.train_images, "train_images")
        test, _ = stratified_subset(loaded.test, TEST_IMAGES, "test_images")
        return LoadedDataset("mnist", loaded.classes, train, Split(train.x[:0], train.y[:0]), test,
                             loaded.fingerprint, loaded.source)
    rng = np.random.default_rng(SEED)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), np.arange(n) % 10)

    return LoadedDataset("mnist-shaped", tuple(map(str, range(10))), split(args.train_images), split(0),
                         split(TEST_IMAGES), "bench", "synthetic")


def engine_throughput(data: LoadedDataset, args: argparse.Namespace) -> float:
    result = run_job(args.model, data, seed=SEED, progress=False, epochs=args.epochs, batch_size=args.batch_size,
                     optimizer="adam", lr=LR, momentum=BETAS[0], weight_decay=0.0, schedule="constant",
                     warmup_epochs=0.0, label_smoothing=0.0, augment="none", bench_seconds=0.05)
    if result.status != Status.OK:
        raise RuntimeError(f"engine run failed: {result.metrics['error']}")
    return result.metrics["train_throughput"]


class SteadyBatches(keras.callbacks.Callback):
    """Times what the engine's SteadyTimer times: each epoch's batches after the first ``skip`` of the run,
    the device synchronised at each window edge."""

    def __init__(self, skip: int, batch_size: int, device: torch.device) -> None:
        super().__init__()
        self.skip, self.batch_size, self.device = skip, batch_size, device
        self.seen = self.images = 0
        self.elapsed = 0.0
        self.started: float | None = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen >= self.skip and self.started is None:
            synchronize(self.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.started is not None:
            self.images += self.batch_size

    def on_epoch_end(self, epoch, logs=None):
        if self.started is not None:
            synchronize(self.device)
            self.elapsed += time.perf_counter() - self.started
            self.started = None


def keras_fit_throughput(data: LoadedDataset, args: argparse.Namespace) -> float:
    from imgbench.registry import get_registry

    seed_everything(SEED, keras_model=True)
    # the registry's builder in Keras' own defaults (float32, ``--fit-layout``), as a Keras user runs it
    before = keras.config.image_data_format()
    keras.config.set_image_data_format(args.fit_layout)
    try:
        with keras.device("cpu"):
            module = get_registry().build_model(args.model, num_classes=len(data.classes), in_chans=1,
                                                image_size=data.image_shape[0])
    finally:
        keras.config.set_image_data_format(before)
    model = module.net
    model.compile(optimizer=keras.optimizers.Adam(LR, beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=False)
    mean, std = channel_stats(data.train.x)
    x = ((data.train.x.astype(np.float32) - mean) / std).astype(np.float32)  # NHWC
    if args.fit_layout == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    timer = SteadyBatches(SKIP_STEPS, args.batch_size, torch.device("cpu"))
    model.fit(x, data.train.y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0,
              callbacks=[timer])
    return timer.images / timer.elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="keras/mnist_convnet")
    parser.add_argument("--data-dir", help="a folder holding MNIST (default: MNIST-shaped random images)")
    parser.add_argument("--cache-dir", default=None, help="imgbench's decode cache (default: its usual one)")
    parser.add_argument("--train-images", type=int, default=12_800)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fit-layout", choices=("channels_last", "channels_first"), default="channels_last",
                        help="the image data format of the model model.fit trains (default: Keras' default)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache_dir is None:
        from imgbench.paths import DataFolders

        args.cache_dir = DataFolders.resolve().cache_dir
    data = mnist(args)

    engine, keras_fit = [], []
    for round_ in range(args.rounds):  # interleaved, alternating which goes first
        if round_ % 2:
            keras_fit.append(keras_fit_throughput(data, args))
        engine.append(engine_throughput(data, args))
        if not round_ % 2:
            keras_fit.append(keras_fit_throughput(data, args))
        print(f"round {round_ + 1}: engine {engine[-1]:.0f} img/s, keras fit {keras_fit[-1]:.0f} img/s, "
              f"ratio {engine[-1] / keras_fit[-1]:.3f}", flush=True)

    ratios = [e / k for e, k in zip(engine, keras_fit)]
    figures = {
        "model": args.model, "data": data.name, "train_images": len(data.train), "epochs": args.epochs,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "rounds": args.rounds,
        "skip_steps": SKIP_STEPS, "fit_layout": args.fit_layout, "engine_images_per_s": engine, "keras_fit_images_per_s": keras_fit,
        "ratios": ratios, "median_ratio": statistics.median(ratios), "target": TARGET,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        from imgbench.paths import atomic_write_json

        atomic_write_json(args.json, figures)
    ok = figures["median_ratio"] >= TARGET
    print(f"engine / keras fit: median {figures['median_ratio']:.3f} (target >= {TARGET}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
