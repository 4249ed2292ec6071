"""Choosing the accelerator: KVM only when it can really run a guest, else TCG.

/dev/kvm can exist and even accept KVM_CREATE_VM on a host without hardware
virtualisation (this project's own CI machines): the guest then dies on emulation
failures. So "usable" needs the device to open read-write AND the CPU to advertise vmx/svm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str

    @property
    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]

    @property
    def slowdown(self) -> float:
        return slowdown(self.name)


def slowdown(accel_name: str) -> float:
    """Timeouts are multiplied by this: TCG runs a guest several times slower."""
    return 1.0 if accel_name == "kvm" else 4.0


def cpu_virt_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split()) & {"vmx", "svm"}
    return set()


def kvm_problem(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Why KVM is unusable here, or None when it is usable."""
    if not dev.exists():
        return f"{dev} does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user (add it to group kvm)"
    try:
        flags = cpu_virt_flags(cpuinfo.read_text())
    except OSError:
        return f"{cpuinfo} is unreadable"
    if not flags:
        return ("the CPU advertises neither vmx nor svm (no hardware virtualisation; "
                f"{dev} exists but guests would fail)")
    return None


def choose_accel(requested: str, *, problem: str | None = None,
                 probe: bool = True) -> Accel:
    if probe and problem is None:
        problem = kvm_problem()
    if requested == "tcg":
        return Accel("tcg", "requested")
    if requested == "kvm":
        if problem:
            raise LabError(f"--accel kvm was asked for, but KVM is unusable: {problem}. "
                           "Use --accel tcg (or auto) to run emulated.")
        return Accel("kvm", "requested")
    if requested != "auto":
        raise LabError(f"Unknown accelerator {requested!r}: use auto, kvm or tcg.")
    if problem:
        return Accel("tcg", problem)
    return Accel("kvm", "usable /dev/kvm and hardware virtualisation")
