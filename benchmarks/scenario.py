"""Time `invoke scenario run` on a running lab, phase by phase, against a baseline.

Baseline: `invoke lab.ssh -c true` on the same lab in the same run, i.e. starting the CLI,
one SSH connection with the pinned key and one command: the floor under any lab command.
Each scenario run is reported as a ratio to it, with the per-phase times that
summary.json records. Runs alternate with the baseline so noise hits both alike.

    .venv/bin/python benchmarks/scenario.py [--runs 3] [--scenario acl-basic]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).parent / "invoke")


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", default="acl-basic")
    parser.add_argument("--name", default="default", help="lab to use (brought up if needed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fentry-lab-bench-") as results:
        env = {**os.environ, "FENTRY_LAB_NAME": args.name, "FENTRY_LAB_RESULTS": results}
        subprocess.run([INVOKE, "lab.up"], cwd=REPO, env=env, check=True)
        # One unmeasured run fills the probe-build and static-disassembly caches.
        subprocess.run([INVOKE, "scenario", "run", args.scenario], cwd=REPO, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base: list[float] = []
        runs: list[float] = []
        phases: dict[str, list[float]] = {}
        for i in range(args.runs):
            base.append(timed([INVOKE, "lab.ssh", "-c", "true"], env))
            runs.append(timed([INVOKE, "scenario", "run", args.scenario], env))
            summary = json.loads(
                (Path(results) / args.scenario / "latest" / "summary.json").read_text())
            assert summary["status"] == "passed", summary
            for phase, took in summary["phases_s"].items():
                phases.setdefault(phase, []).append(took)
            print(f"run {i + 1}: baseline {base[-1]:.2f} s, scenario {runs[-1]:.2f} s",
                  flush=True)
    b, r = statistics.median(base), statistics.median(runs)
    print("median phases: " + ", ".join(f"{k} {statistics.median(v):.2f} s"
                                         for k, v in phases.items()))
    print(f"median of {args.runs}: baseline (lab.ssh -c true) {b:.2f} s, scenario run "
          f"{args.scenario} {r:.2f} s, ratio {r / b:.1f}")


if __name__ == "__main__":
    main()
