"""Time cold and warm loads of each dataset from a local copy.

Cold: an empty cache, so files are verified, decoded and written to the cache. Warm: the same load again,
which memory-maps the decoded cache and gathers the splits (median of --repeats). Each dataset runs in a
fresh cache folder that is deleted afterwards.

    python benchmarks/bench_datasets.py --data-dir ../shared/data [--image-size 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from imgbench.paths import DataFolders
from imgbench.datasets.plugin import imgbench_datasets

DEFAULT_DATASETS = ("mnist", "cifar10", "flowers")
VAL_SIZE = 0.1


def time_load(spec, data_dir: Path, cache_dir: Path, image_size: int) -> tuple[float, object]:
    start = time.perf_counter()
    data = spec.load(image_size=image_size, val_size=VAL_SIZE, data_dir=data_dir, cache_dir=cache_dir)
    return time.perf_counter() - start, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="local copies (default: IMGBENCH_DATA_DIR)")
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--image-size", type=int, default=0, help="0: each dataset's own size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_dir = DataFolders.resolve(args.data_dir).data_dir
    if data_dir is None:
        parser.error("give --data-dir or set IMGBENCH_DATA_DIR (e.g. ../shared/data)")
    specs = {spec.name: spec for spec in imgbench_datasets()}
    rows = []
    for name in args.datasets:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as cache:
            cold, data = time_load(specs[name], data_dir, Path(cache), args.image_size)
            warm = [time_load(specs[name], data_dir, Path(cache), args.image_size)[0] for _ in range(args.repeats)]
        rows.append({"dataset": name, "images": len(data.train) + len(data.val) + len(data.test),
                     "shape": "x".join(map(str, data.image_shape)), "cold_s": round(cold, 3),
                     "warm_s": round(statistics.median(warm), 3), "source": data.source})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'dataset':10} {'images':>7} {'shape':>10} {'cold_s':>8} {'warm_s':>8}  source")
        for r in rows:
            print(f"{r['dataset']:10} {r['images']:>7} {r['shape']:>10} {r['cold_s']:>8.2f} {r['warm_s']:>8.3f}  {r['source']}")
        print(f"cores: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}, "
              f"python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
