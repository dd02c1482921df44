"""Offline proof that transfer works: pretrain on CIFAR-10, then linear-probe flowers from that checkpoint
and from random weights, with the same model, recipe and seed. The pretrained start must win clearly.

    python benchmarks/transfer_proof.py --data-dir ../shared/data [--model tinycnn/wide] [--epochs 10]

Prints one JSON object: the CIFAR-10 job's accuracy and the two flowers probes' accuracies per seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from imgbench.engine import run_job
from imgbench.schema import MODEL_CHECKPOINT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="local copies of cifar10/ and flowers/")
    parser.add_argument("--model", default="tinycnn/wide")
    parser.add_argument("--image-size", type=int, default=32, help="both datasets' image side")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--pretrain-samples", type=int, default=0, help="CIFAR-10 train subset (0 = all)")
    parser.add_argument("--epochs", type=int, default=10, help="flowers linear-probe epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=None, help="keep the job folders here (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="imgbench-transfer-"))
    quiet = dict(progress=False, bench_seconds=0.1, data_dir=args.data_dir, image_size=args.image_size)
    source = run_job(args.model, "cifar10", out_dir=out / "cifar10", epochs=args.pretrain_epochs,
                     train_samples=args.pretrain_samples, save_weights=True, **quiet)
    probe = dict(finetune="head", epochs=args.epochs, lr=1e-3, warmup_epochs=0.5, **quiet)
    figures = {"model": args.model, "image_size": args.image_size, "cifar10_accuracy": source.metrics["accuracy"],
               "cifar10_epochs": args.pretrain_epochs, "probe_epochs": args.epochs, "seeds": args.seeds,
               "pretrained_start": [], "random_start": []}
    for seed in args.seeds:
        pretrained = run_job(args.model, "flowers", seed=seed, out_dir=out / f"flowers-pretrained-s{seed}",
                             weights=str(out / "cifar10" / MODEL_CHECKPOINT), **probe)
        scratch = run_job(args.model, "flowers", seed=seed, out_dir=out / f"flowers-random-s{seed}", **probe)
        figures["pretrained_start"].append(pretrained.metrics["accuracy"])
        figures["random_start"].append(scratch.metrics["accuracy"])
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
