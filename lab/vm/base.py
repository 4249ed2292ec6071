"""What every VM backend offers the rest of the lab, the per-lab state file, lock and
directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from lab import console
from lab.config import Settings
from lab.errors import UsageError
from lab.host import file_lock
from lab.image.build import Image, build_image, find_image
from lab.ssh import SshTarget
from lab.vm.accel import Accel, choose_accel


def accel_and_image(settings: Settings, emulated: str) -> tuple[Accel, Image]:
    """The accelerator first (an unusable --accel kvm fails before any image build), with
    a notice when running emulated, then the image (built if missing)."""
    accel = choose_accel(settings.accel)
    if accel.name == "tcg":
        console.say(f"no usable KVM ({accel.reason}): {emulated}, expect a slower lab")
    return accel, find_image(settings) or build_image(settings)


LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def lab_dir(labs_dir: Path, name: str) -> Path:
    """The lab's own directory, which is always inside labs_dir: a name such as '', '..',
    '../x', 'a b/c' or 'a,b' is refused before anything is created or deleted."""
    if not LAB_NAME.fullmatch(name) or name.strip(".") == "":
        raise UsageError(f"Invalid lab name {name!r}: use 1-63 letters, digits, '_', '-' or "
                         "'.', starting with a letter or digit (for example --name dev).")
    root = labs_dir.resolve()
    directory = (root / name).resolve()
    if directory.parent != root:  # belt and braces: a symlink planted in labs_dir
        raise UsageError(f"Lab name {name!r} resolves to {directory}, outside {root}.")
    return directory


def lab_names(labs_dir: Path) -> list[str]:
    """The labs under labs_dir (directories with a state file, readable or not), sorted."""
    if not labs_dir.is_dir():
        return []
    return sorted(d.name for d in labs_dir.iterdir()
                  if LAB_NAME.fullmatch(d.name) and (d / "state.json").exists())


def lab_lock(directory: Path, name: str, *,
             wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """One command at a time may start or stop a lab; the others wait (wait=True, with
    a notice) or are told so at once."""
    return file_lock(directory / "lock", wait=wait,
                     busy=f"Another command is starting or stopping lab {name!r} right now; "
                          + ("waiting for it to finish." if wait else "wait for it to finish."))


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
    pid_start: int = 0  # the pid's start time (lab.host.process_start_time): pid reuse-proof
    wanted: bool = False  # the lab should be running (set by up, cleared by down)
    ssh_port: int = 0
    started_at: float = 0.0
    ready_after_s: float = 0.0
    argv: list[str] = field(default_factory=list)

    corrupt: str = ""  # why the state file could not be read (not saved)

    @classmethod
    def load(cls, path: Path, name: str, backend: str) -> LabState:
        """The state on disk; a missing file is a fresh lab, an unreadable one is returned
        empty with `corrupt` set (never an exception: the lab must stay stoppable)."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls(name=name, backend=backend)
        except OSError as exc:
            return cls(name=name, backend=backend, corrupt=str(exc))
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            known = {k: v for k, v in data.items()
                     if k in cls.__dataclass_fields__ and k != "corrupt"}
            state = cls(**{**known, "name": name, "backend": backend})
            state._check_types()
        except (ValueError, TypeError) as exc:
            return cls(name=name, backend=backend, corrupt=f"{exc}")
        return state

    def _check_types(self) -> None:
        for key, fld in self.__dataclass_fields__.items():
            value = getattr(self, key)
            kinds: dict[str, tuple[type, ...]] = {
                "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                "list[str]": (list,)}
            kind = kinds.get(str(fld.type))
            if kind and (not isinstance(value, kind)
                         or (kind == (int,) and isinstance(value, bool))):
                raise TypeError(f"{key} is {value!r}")

    def corrupt_message(self, path: Path) -> str:
        return (f"The state file of lab {self.name!r} ({path}) is unreadable ({self.corrupt}). "
                f"Run `invoke lab.destroy --name {self.name}`: it finds and stops the lab's "
                "qemu by its directory, then deletes the lab.")

    def label(self, running: bool) -> str:
        """up; dead when the lab should run but its VM is gone; else down."""
        if running:
            return "up"
        return "dead" if self.wanted else "down"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            data = asdict(self)
            data.pop("corrupt")
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


@dataclass(frozen=True)
class LabStatus:
    name: str
    backend: str
    state: str  # "up", "unresponsive", "up (disk full)", "dead", "down" or "corrupt"
    release: str
    kernel_release: str
    accel: str
    pid: int
    ssh_port: int
    uptime_s: float
    image: str = ""  # the image directory the running lab booted from
    problem: str = ""  # what is wrong and the fix, when state is not up or down


@dataclass(frozen=True)
class RunningLab:
    """What up() hands back: how to reach the lab and what it booted."""

    target: SshTarget
    image: str  # the image directory it booted from
    accel: str


class Backend(Protocol):
    """A lab VM. The QEMU and Vagrant backends fit this without callers changing."""

    name: str
    lab_dir: Path

    def names(self) -> list[str]:
        """The labs of this backend (any state), sorted."""
        ...

    def up(self) -> RunningLab:
        """Boot (or find running) and return how to reach it by SSH; idempotent."""
        ...

    def down(self) -> None:
        """Power off gracefully; keeps the disk for the next up."""
        ...

    def destroy(self) -> None:
        """Stop and delete everything this lab made."""
        ...

    def status(self, *, probe: bool = True) -> LabStatus:
        """The lab's state; with probe, an up lab's guest is asked whether it answers."""
        ...

    def ssh_target(self) -> SshTarget:
        """How to reach the running lab; LabError when it is not up."""
        ...

    def serial_log(self) -> Path: ...

    def reset(self) -> RunningLab:
        """Back to the pristine ready snapshot (memory and disk); LabError if unsupported."""
        ...
