"""What every VM backend offers the rest of the lab, and the per-lab state file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from lab import console
from lab.config import Settings
from lab.host import file_lock
from lab.image.build import Image, build_image, find_image
from lab.ssh import SshTarget
from lab.vm.accel import Accel, choose_accel


def serial_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a serial log, indented, for an error message about a boot."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return " "
    shown = "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
    return f"\n  Last lines of the serial log ({path}):\n{shown}\n  "


def accel_and_image(settings: Settings, emulated: str) -> tuple[Accel, Image]:
    """The accelerator first (an unusable --accel kvm fails before any image build), with
    a notice when running emulated, then the image (built if missing)."""
    accel = choose_accel(settings.accel)
    if accel.name == "tcg":
        console.say(f"no usable KVM ({accel.reason}): {emulated}, expect a slower lab")
    return accel, find_image(settings) or build_image(settings)


def lab_lock(directory: Path, name: str) -> contextlib.AbstractContextManager[None]:
    """One command at a time may start or stop a lab; the others are told so at once."""
    return file_lock(directory / "lock", wait=False,
                     busy=f"Another command is starting or stopping lab {name!r} right now; "
                          "wait for it to finish.")


@dataclass
class LabState:
    """Rewritten atomically after every change; the truth about one lab between commands."""

    name: str
    backend: str
    release: str = ""
    image: str = ""  # image directory
    kernel_release: str = ""
    build_id: str = ""
    accel: str = ""
    pid: int = 0
    ssh_port: int = 0
    started_at: float = 0.0
    ready_after_s: float = 0.0
    argv: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, name: str, backend: str) -> LabState:
        if not path.is_file():
            return cls(name=name, backend=backend)
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def label(self, running: bool) -> str:
        """up; dead when the state says running but the VM is gone; else down."""
        if running:
            return "up"
        return "dead" if self.pid else "down"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


@dataclass(frozen=True)
class LabStatus:
    name: str
    backend: str
    state: str  # "up", "down" or "dead"
    release: str
    kernel_release: str
    accel: str
    pid: int
    ssh_port: int
    uptime_s: float
    image: str = ""  # the image directory the running lab booted from


class Backend(Protocol):
    """A lab VM. The QEMU and Vagrant backends fit this without callers changing."""

    name: str

    def up(self) -> SshTarget:
        """Boot (or find running) and return how to reach it by SSH; idempotent."""
        ...

    def down(self) -> None:
        """Power off gracefully; keeps the disk for the next up."""
        ...

    def destroy(self) -> None:
        """Stop and delete everything this lab made."""
        ...

    def status(self) -> LabStatus: ...

    def ssh_target(self) -> SshTarget:
        """How to reach the running lab; LabError when it is not up."""
        ...

    def serial_log(self) -> Path: ...
