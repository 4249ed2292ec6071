"""Time lab.up from a ready snapshot, lab.reset and scenario runs against their baselines.

All in one run, one VM at a time, on labs named sn-bench-*:
  cold     `invoke lab.up` on a new lab with snapshots off (today's nvme fast-boot shape)
  restore  `invoke lab.up` on a new lab that starts from the ready snapshot
  reset    `invoke lab.reset` on an up lab
  run      `invoke scenario run acl-basic` as the first run after a reset (the guest's page
           cache as the snapshot left it), with its phases from summary.json
  again    the same run once more on that lab (the page cache now warm), with its phases
  fresh    `invoke scenario run acl-basic --fresh`
  ssh      `invoke lab.ssh -c true` on an up lab: the floor under any lab command
Medians over --runs (cold: one run unless --cold-runs), ratios to cold and to ssh. The
snapshot is made first if missing (not timed). A restore is also split into its parts
(overlay, loading the state, first SSH + guest fix-up) by timing the library calls.

    .venv/bin/python benchmarks/snapshot.py [--runs 3] [--cold-runs 1]
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
sys.path.insert(0, str(REPO))
INVOKE = str(Path(sys.executable).parent / "invoke")

from lab.config import load_settings  # noqa: E402
from lab.vm import snapshot  # noqa: E402
from lab.vm.base import accel_and_image  # noqa: E402
from lab.vm.qemu import QemuBackend  # noqa: E402
from lab.vm.qemu_process import free_port  # noqa: E402


def invoke(name: str, results: Path, *args: str, snapshots: bool = True) -> float:
    env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results),
           "FENTRY_LAB_SNAPSHOTS": "on" if snapshots else "off"}
    started = time.monotonic()
    proc = subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"`invoke {' '.join(args)}` failed:\n{proc.stdout}{proc.stderr}")
    return elapsed


def destroy(name: str, results: Path) -> None:
    invoke(name, results, "lab.destroy")


def restore_parts(name: str) -> dict[str, float]:
    """One restore through the library, each step timed (the lab is left up)."""
    settings = load_settings().with_overrides({"name": name})
    lab = QemuBackend(settings)
    accel, image = accel_and_image(settings, "TCG")
    image = snapshot.lab_image(image)
    times: dict[str, float] = {}
    mark = time.monotonic()
    ready = snapshot.choose(lab, image, accel)
    assert ready is not None, "no ready snapshot"
    times["find+verify"] = time.monotonic() - mark
    mark = time.monotonic()
    snapshot.prepare_overlay(lab, ready)
    times["overlay"] = time.monotonic() - mark
    port = free_port()
    boot_id = snapshot.new_boot_id()
    argv = lab.argv(image, accel, port) + snapshot.incoming_argv(ready, boot_id)
    mark = time.monotonic()
    with lab.qemu_log.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        snapshot.wait_restored(lab, proc, 60)
        times["load state"] = time.monotonic() - mark
        mark = time.monotonic()
        snapshot.fix_guest(lab._target(port), boot_id)
        times["ssh+fix-up"] = time.monotonic() - mark
    finally:
        proc.kill()
        proc.wait()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--scenario", default="acl-basic")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="sn-bench-"))
    lab = f"sn-bench-{os.getpid()}"
    times: dict[str, list[float]] = {k: [] for k in
                                     ("cold", "restore", "reset", "run", "again", "fresh", "ssh")}
    phases: dict[str, list[dict[str, float]]] = {"run": [], "again": []}
    try:
        invoke(lab, results, "lab.up")  # makes the snapshot if missing (not timed)
        destroy(lab, results)
        for _ in range(args.cold_runs):
            times["cold"].append(invoke(lab, results, "lab.up", snapshots=False))
            destroy(lab, results)
        for _ in range(args.runs):
            times["restore"].append(invoke(lab, results, "lab.up"))
            times["ssh"].append(invoke(lab, results, "lab.ssh", "-c", "true"))
            times["reset"].append(invoke(lab, results, "lab.reset"))
            summary = results / args.scenario / "latest" / "summary.json"
            for key in ("run", "again"):
                times[key].append(invoke(lab, results, "scenario", "run", args.scenario))
                phases[key].append(json.loads(summary.read_text()).get("phases_s", {}))
            times["fresh"].append(invoke(lab, results, "scenario", "run", args.scenario,
                                         "--fresh"))
            destroy(lab, results)
        parts = restore_parts(lab)
    finally:
        destroy(lab, results)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"medians over {args.runs} runs (cold: {args.cold_runs}), seconds; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    targets = {"restore": "<= 0.4x cold and <= 3 s", "reset": "<= 3 s", "run": "<= 5 s",
               "again": "<= 5 s", "fresh": "<= 8 s"}
    for key, value in med.items():
        extra = f"  {value / med['cold']:.2f}x cold" if key == "restore" else ""
        print(f"  {key:8} {value:6.2f}  {value / med['ssh']:5.2f}x ssh{extra}"
              f"  {('target ' + targets[key]) if key in targets else ''}")
    for key, runs in phases.items():
        names = sorted({p for run in runs for p in run})
        print(f"  {key} phases (median s): " + ", ".join(
            f"{n} {statistics.median(run.get(n, 0.0) for run in runs):.2f}" for n in names))
    print("  one restore, split: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
