"""Time `invoke lab.up --backend vagrant` against `invoke lab.up` (QEMU), in one run.

Three measurements per round, alternating so that machine noise hits all alike:
  qemu            `lab.up` of a fresh QEMU lab (then `lab.destroy`)
  vagrant-first   `lab.up --backend vagrant` of a fresh lab: vagrant-libvirt uploads the
                  box into libvirt's pool and defines the domain (then `lab.down`)
  vagrant-again   `lab.up --backend vagrant` of that lab after `lab.down` (then `lab.destroy`,
                  which also deletes the box volume, so the next round starts from nothing)
Each clock stops when the task returns: SSH answers with the pinned host key. The box is
made (`invoke image.box`) before the first round and not timed. Medians and their ratios to
the QEMU median are printed.

    .venv/bin/python benchmarks/vagrant_vs_qemu.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.config import load_settings  # noqa: E402
from lab.vm.vagrant.box import make_box  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")


def invoke(name: str, *args: str) -> float:
    env = {**os.environ, "FENTRY_LAB_NAME": name}
    started = time.monotonic()
    proc = subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    took = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"`invoke {' '.join(args)}` failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    make_box(load_settings())
    qemu_name, vagrant_name = f"bench-q-{os.getpid()}", f"bench-v-{os.getpid()}"
    times: dict[str, list[float]] = {"qemu": [], "vagrant-first": [], "vagrant-again": []}
    try:
        for run in range(args.runs):
            times["qemu"].append(invoke(qemu_name, "lab.up"))
            invoke(qemu_name, "lab.destroy")
            times["vagrant-first"].append(invoke(vagrant_name, "lab.up", "--backend", "vagrant"))
            invoke(vagrant_name, "lab.down", "--backend", "vagrant")
            times["vagrant-again"].append(invoke(vagrant_name, "lab.up", "--backend", "vagrant"))
            invoke(vagrant_name, "lab.destroy", "--backend", "vagrant")
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                  flush=True)
    finally:
        subprocess.run([INVOKE, "lab.destroy"], cwd=REPO, capture_output=True, check=False,
                       env={**os.environ, "FENTRY_LAB_NAME": qemu_name})
        subprocess.run([INVOKE, "lab.destroy", "--backend", "vagrant"], cwd=REPO,
                       capture_output=True, check=False,
                       env={**os.environ, "FENTRY_LAB_NAME": vagrant_name})
    base = statistics.median(times["qemu"])
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:14} median {median:6.1f} s  ({median / base:4.1f} x qemu)  runs: "
              + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
