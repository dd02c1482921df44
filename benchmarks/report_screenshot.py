"""Screenshot a report.html in headless Chromium, to look at the page as a reader would.

    python benchmarks/report_screenshot.py OUT [--png /tmp/report.png] [--height 4000] [--build]
    python benchmarks/report_screenshot.py --synthetic /tmp/synthetic-out [--baseline-synthetic]

OUT is a results folder holding report.html (``--build`` rebuilds it in-process first). ``--synthetic DIR``
writes the tests' realistic synthetic results folder into DIR and builds its report. Needs Debian's
``chromium`` (apt-get install -y chromium); Chromium gets a throwaway profile and no network features.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1400
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def screenshot(html: Path, png: Path, height: int) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found: apt-get update && apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={WIDTH},{height}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="results folder with report.html")
    parser.add_argument("--synthetic", type=Path, metavar="DIR", help="make a synthetic results folder here")
    parser.add_argument("--baseline-synthetic", action="store_true",
                        help="with --synthetic: also make a baseline folder (DIR-baseline) and compare")
    parser.add_argument("--build", action="store_true", help="rebuild report.html in-process first")
    parser.add_argument("--png", type=Path, default=Path("/tmp/report.png"))
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()

    from imgbench.report import render

    out, baseline = args.out, None
    if args.synthetic:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from report_synthetic import make_results

        shutil.rmtree(args.synthetic, ignore_errors=True)
        out = make_results(args.synthetic)
        if args.baseline_synthetic:
            baseline = args.synthetic.with_name(args.synthetic.name + "-baseline")
            shutil.rmtree(baseline, ignore_errors=True)
            make_results(baseline, speed={"timm/resnet18": 1.12})
    if out is None:
        parser.error("give OUT or --synthetic DIR")
    html = render(out, baseline) if args.synthetic or args.build else out / "report.html"
    print(screenshot(html, args.png, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
