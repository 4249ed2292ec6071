"""Is a running lab's guest healthy: it answers over SSH, and its root disk has room."""

from __future__ import annotations

from lab.errors import LabError, LabFailure
from lab.ssh import Session, SshTarget

PROBE_TIMEOUT_S = 5.0


def _fix(name: str) -> str:
    return f"`invoke lab.destroy --name {name} && invoke lab.up --name {name}`"


def probe(target: SshTarget, name: str) -> tuple[str, str]:
    """(label, problem): "up", "up (disk full)" or "unresponsive", with the fix."""
    try:
        with Session(target, connect_timeout=PROBE_TIMEOUT_S, attempts=1) as ssh:
            result = ssh.run("df -Pk / | tail -n 1", timeout=PROBE_TIMEOUT_S)
    except LabError as exc:
        return "unresponsive", (f"qemu runs but the guest does not answer over SSH "
                                f"({exc.message.split('. ')[0]}); fix: {_fix(name)}")
    fields = result.out.split()
    if result.exit_status == 0 and len(fields) >= 4 and fields[3] == "0":
        used = fields[4] if len(fields) > 4 else "100%"
        return "up (disk full)", (f"the guest's root disk is full ({used} used): delete files "
                                  f"in the guest (`invoke lab.ssh`), or {_fix(name)}")
    return "up", ""


def require_answers(target: SshTarget, name: str, pid: int) -> None:
    """lab.up on a running lab: a live qemu is not enough, its guest must answer."""
    try:
        with Session(target, connect_timeout=PROBE_TIMEOUT_S, attempts=2):
            pass
    except LabError as exc:
        raise LabFailure(f"Lab {name!r} is running (qemu pid {pid}) but is not usable: "
                         f"{exc.message} Fix: {_fix(name)}.") from None
