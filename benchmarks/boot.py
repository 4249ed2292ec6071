"""Time `invoke lab.up` against a bare qemu boot of the same image, in one run.

The baseline starts qemu-system-x86_64 with the very argv the lab uses (same image, fresh
overlay) and stops the clock when the guest prints its ready line on the serial console;
`lab.up` adds everything a user gets (state, overlay, watchdog, SSH with the pinned key,
build-ID check). Runs alternate so that machine noise hits both alike; medians are
reported with their ratio.

    .venv/bin/python benchmarks/boot.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.config import load_settings  # noqa: E402
from lab.image.build import build_image  # noqa: E402
from lab.vm.accel import choose_accel  # noqa: E402
from lab.vm.boot import READY  # noqa: E402
from lab.vm.qemu_process import free_port, qemu_argv  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")


def bare_boot(scratch: Path) -> float:
    settings = load_settings()
    image = build_image(settings)
    overlay = scratch / "overlay.qcow2"
    overlay.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image.disk), str(overlay)], check=True)
    serial = scratch / "serial.log"
    serial.write_bytes(b"")
    argv = qemu_argv(image=image, overlay=overlay, accel=choose_accel(settings.accel),
                     cpus=settings.cpus, memory=settings.memory, ssh_port=free_port(),
                     serial_log=serial, qmp_socket=scratch / "qmp.sock", name="bench-bare")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not READY.search(serial.read_bytes()):
            if proc.poll() is not None or time.monotonic() - started > 300:
                said = proc.stderr.read() if proc.stderr else b""
                tail = serial.read_text(errors="replace")[-2000:]
                raise SystemExit(f"bare qemu boot failed: {said!r}\n{tail}")
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def lab_up(name: str) -> float:
    env = {**os.environ, "FENTRY_LAB_NAME": name}
    started = time.monotonic()
    subprocess.run([INVOKE, "lab.up"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.monotonic() - started
    subprocess.run([INVOKE, "lab.destroy"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bare: list[float] = []
    harness: list[float] = []
    name = f"bench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="fentry-lab-bench-") as scratch:
        for i in range(args.runs):
            bare.append(bare_boot(Path(scratch)))
            harness.append(lab_up(name))
            print(f"run {i + 1}: bare qemu to ready {bare[-1]:.2f} s, "
                  f"lab.up to SSH {harness[-1]:.2f} s", flush=True)
    b, h = statistics.median(bare), statistics.median(harness)
    print(f"median of {args.runs}: bare qemu {b:.2f} s, lab.up {h:.2f} s, "
          f"ratio lab.up/bare {h / b:.2f} (harness overhead {100 * (h / b - 1):+.0f} %)")


if __name__ == "__main__":
    main()
