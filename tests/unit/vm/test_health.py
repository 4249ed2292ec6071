"""lab.vm.health: the labels and fixes lab.status shows for a running lab's guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import LabFailure
from lab.ssh import CommandResult, SshTarget
from lab.vm import health

TARGET = SshTarget("127.0.0.1", 1, "root", Path("/nonexistent"), "ssh-ed25519", "AAAA")


class FakeSession:
    """Answers `df` with a canned line, or fails to connect like an unreachable guest."""

    df = "/dev/vda1 4000000 3000000 1000000 75% /"
    fail = False

    def __init__(self, target: SshTarget, **_: object) -> None:
        pass

    def __enter__(self) -> FakeSession:
        if self.fail:
            raise LabFailure("Could not connect by SSH to root@127.0.0.1:1 after 1 attempts "
                             "(Error reading SSH protocol banner). Check `invoke lab.status`.")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, command: str, timeout: float) -> CommandResult:
        return CommandResult(command, 0, self.df.encode(), b"", 0.1)


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    FakeSession.df, FakeSession.fail = "/dev/vda1 4000000 3000000 1000000 75% /", False
    monkeypatch.setattr(health, "Session", FakeSession)
    return FakeSession


def test_healthy_guest_is_up() -> None:
    assert health.probe(TARGET, "lab") == ("up", "")


def test_full_root_disk_is_named(fake: type[FakeSession]) -> None:
    fake.df = "/dev/vda1 4000000 4000000 0 100% /"
    label, problem = health.probe(TARGET, "lab")
    assert label == "up (disk full)"
    assert "root disk is full" in problem and "lab.destroy --name lab" in problem


def test_unanswering_guest_is_unresponsive_with_the_fix(fake: type[FakeSession]) -> None:
    fake.fail = True
    label, problem = health.probe(TARGET, "lab")
    assert label == "unresponsive"
    assert "does not answer over SSH" in problem
    assert "`invoke lab.destroy --name lab && invoke lab.up --name lab`" in problem
    with pytest.raises(LabFailure, match="running \\(qemu pid 42\\) but is not usable") as info:
        health.require_answers(TARGET, "lab", 42)
    assert info.value.code == 2
