"""Time the kernel matrix against the single runs it replaces, for each --jobs setting.

Baseline, in the same run: for each release on its own, boot a lab, run the scenario and
destroy the lab (what a user would do by hand, one release after the other); its sum is
what the matrix must beat. Then the matrix with --jobs 1..N. Caches (images, static
disassembly) are warmed by one unmeasured matrix run first, so both sides start alike:
every lab is new and builds its probes.

    .venv/bin/python benchmarks/matrix.py [--scenario acl-portable] [--jobs 1,2,3]
        [--releases bullseye,bookworm,trixie] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lab.config import load_settings
from lab.matrix.orchestrate import parse_releases, run_matrix
from lab.run.runner import run_scenario
from lab.scenario.load import find_scenario, load_scenario
from lab.vm import backend_for


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", default="acl-portable")
    parser.add_argument("--releases", default="bullseye,bookworm,trixie")
    parser.add_argument("--jobs", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fentry-lab-bench-") as results:
        settings = load_settings(flags={"results": results})
        scenario = load_scenario(find_scenario(args.scenario, settings.scenarios_dir))
        releases = parse_releases(args.releases, settings.images_dir)
        run_matrix(settings, scenario, releases, jobs=1, prefix="bench")  # warm the caches
        singles: list[float] = []
        matrix: dict[int, list[float]] = {}
        for round_ in range(args.rounds):
            total = 0.0
            for release in releases:
                one = settings.with_overrides({"release": release,
                                               "name": f"bench-single-{release}",
                                               "results": Path(results) / "single"})
                backend = backend_for(one)
                started = time.monotonic()
                try:
                    backend.up()
                    outcome = run_scenario(one, scenario, backend)
                finally:
                    backend.destroy()
                took = time.monotonic() - started
                total += took
                print(f"round {round_ + 1}: {release} alone {took:.1f} s ({outcome.status})",
                      flush=True)
            singles.append(total)
            for jobs in (int(j) for j in args.jobs.split(",")):
                started = time.monotonic()
                result = run_matrix(settings, scenario, releases, jobs=jobs, prefix="bench")
                took = time.monotonic() - started
                matrix.setdefault(jobs, []).append(took)
                statuses = ", ".join(r["status"] for r in result.matrix["releases"])
                print(f"round {round_ + 1}: matrix --jobs {jobs} {took:.1f} s ({statuses})",
                      flush=True)
    base = statistics.median(singles)
    print(f"sum of single runs (median of {args.rounds}): {base:.1f} s")
    for jobs, times in matrix.items():
        t = statistics.median(times)
        print(f"matrix --jobs {jobs}: {t:.1f} s, ratio to the single runs {t / base:.2f}")


if __name__ == "__main__":
    main()
