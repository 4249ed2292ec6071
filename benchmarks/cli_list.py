"""How long `invoke --list` (every TAB press) takes, as a ratio to `import invoke` alone.

Usage: .venv/bin/python benchmarks/cli_list.py [RUNS]. Runs are interleaved so both see
the same machine load; the ratio is what to compare across changes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).parent / "invoke")


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    baseline, listing, fentry = [], [], []
    for _ in range(runs):
        baseline.append(timed([sys.executable, "-c", "import invoke.main"]))
        listing.append(timed([INVOKE, "--list"]))
        fentry.append(timed([str(Path(sys.executable).parent / "fentry-lab"), "--list"]))
    base = statistics.median(baseline)
    for name, values in (("import invoke", baseline), ("invoke --list", listing),
                         ("fentry-lab --list", fentry)):
        median = statistics.median(values)
        print(f"{name:18} median {median * 1000:6.0f} ms  ratio {median / base:4.2f}")


if __name__ == "__main__":
    main()
