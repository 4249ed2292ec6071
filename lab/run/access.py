"""Reaching the lab for a run: one run per lab at a time, the release it booted, one SSH
session (an up lab's health check is that session's handshake), and a crash named from the
serial console when the connection is lost mid-run."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lab import console
from lab.config import Settings
from lab.errors import LabError, ScenarioError
from lab.host import file_lock
from lab.ssh import Session
from lab.vm.base import Backend, LabStatus
from lab.vm.boot import FATAL, serial_tail
from lab.vm.health import PROBE_TIMEOUT_S


def run_lock(settings: Settings, backend: Backend) -> contextlib.AbstractContextManager[None]:
    """One `scenario run` per lab at a time; the lock lives in the backend's lab directory,
    so `lab.destroy` removes it with the lab."""
    return file_lock(backend.lab_dir / "run.lock", wait=True,
                     busy=f"another `scenario run` is using lab {settings.name!r}: waiting "
                          "for it to finish")


def check_release(settings: Settings, status: LabStatus) -> None:
    """A lab keeps the release it booted: refuse to run a scenario for another one on it."""
    if status.state == "up" and status.release and status.release != settings.release:
        raise ScenarioError(
            f"Lab {settings.name!r} is up on {status.release} (kernel "
            f"{status.kernel_release}), but this run asks for {settings.release}. Nothing "
            f"was run. Either run on it with --release {status.release}, or use another lab "
            f"(--name), or `invoke lab.destroy --name {settings.name}` first.")


def connect_up_lab(backend: Backend, status: LabStatus) -> Session | None:
    """A session to a lab whose VM runs: connecting is its health check, so an up lab costs
    one SSH handshake, not two (lab.up's check, then the run's). None if the VM is not
    running or does not answer: backend.up() then starts it, or says what is wrong."""
    if status.state != "up":
        return None
    try:
        session = Session(backend.ssh_target(), connect_timeout=PROBE_TIMEOUT_S)
        session.connect(attempts=1)
    except LabError:
        return None
    console.say(f"lab {status.name!r} is up (pid {status.pid}, ssh port {status.ssh_port})")
    return session


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def with_serial(message: str, serial: Path, since: int) -> str:
    """A lab failure's message, naming a kernel panic when the serial log shows one."""
    try:
        with serial.open("rb") as log:
            log.seek(since)
            seen = log.read()
    except OSError:
        return message
    fatal = FATAL.search(seen)
    if fatal:
        message = (f"The guest kernel crashed during the run "
                   f"({fatal.group(1).decode(errors='replace').strip()}). {message} "
                   "Restart the lab: `invoke lab.destroy && invoke lab.up`.")
    return message + serial_tail(serial)
