"""Time writing report.html + trace.json for a recorded bundle, against reading its files.

The baseline reads and json-parses every file of the same bundle (what any renderer must
do at least); the report adds pairing, the byte pictures and the jinja2 render. Both run
alternately in one process; the first render (template compile, jinja2 import) is timed on
its own, as `scenario run` pays it once. Medians, their ratio, and the render as a share of
the recorded run's duration are printed.

    .venv/bin/python benchmarks/report.py [BUNDLE] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.results.report import write_report  # noqa: E402


def read_all(bundle: Path) -> int:
    total = 0
    for path in sorted(bundle.iterdir()):
        if not path.is_file() or path.name in ("report.html", "trace.json"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in text.splitlines() if line.strip()]
        total += len(text)
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?", default=str(REPO / "tests/data/report/acl-basic"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(args.bundle, bundle)
        started = time.perf_counter()
        write_report(bundle)
        first = time.perf_counter() - started
        renders, reads = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            read_all(bundle)
            reads.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_report(bundle)
            renders.append(time.perf_counter() - started)
        size = (bundle / "report.html").stat().st_size
        summary = json.loads((bundle / "summary.json").read_text())
    render, read = statistics.median(renders), statistics.median(reads)
    run_s = float(summary.get("duration_s") or 0)
    print(f"bundle: {args.bundle} (run took {run_s} s)")
    print(f"first render (jinja2 import + template compile): {first * 1000:.1f} ms")
    print(f"render report.html + trace.json, median of {args.runs}: {render * 1000:.1f} ms "
          f"({size / 1024:.0f} KiB)")
    print(f"baseline, read + json-parse the bundle: {read * 1000:.2f} ms "
          f"(render/baseline {render / read:.0f}x)")
    if run_s:
        print(f"first render is {100 * first / run_s:.2f}% of the run's {run_s} s "
              f"(target: under 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
