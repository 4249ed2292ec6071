"""run_scenario's error paths with a fake lab: summary.json always says what happened."""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import pytest

from lab.config import Settings
from lab.errors import LabFailure
from lab.run.runner import run_scenario
from lab.scenario.load import load_scenario
from lab.scenario.model import Scenario
from lab.ssh import SshTarget
from lab.vm.base import LabStatus, RunningLab
from tests.helpers import REPO


class FakeLab:
    """A lab that is `state` on `release`; up() runs `on_up` (which raises to end the run)."""

    name = "qemu"

    def __init__(self, settings: Settings, release: str = "trixie", state: str = "down",
                 on_up: object = None) -> None:
        self.settings = settings
        self.release = release
        self.state = state
        self.on_up = on_up
        self.ups: list[float] = []
        self.lab_dir = settings.labs_dir / settings.name

    def names(self) -> list[str]:
        return [self.settings.name]

    def up(self) -> RunningLab:
        self.ups.append(time.monotonic())
        if callable(self.on_up):
            self.on_up()
        raise LabFailure("qemu exited with status 1 before the guest was ready.")

    def down(self) -> None:
        pass

    def destroy(self) -> None:
        pass

    def status(self, *, probe: bool = True) -> LabStatus:
        return LabStatus(self.settings.name, "qemu", self.state, self.release, "6.12.1",
                         "tcg", 0, 0, 0.0)

    def ssh_target(self) -> SshTarget:
        raise AssertionError("not used")

    def serial_log(self) -> Path:
        return self.settings.labs_dir / self.settings.name / "serial.log"

    def reset(self) -> RunningLab:
        raise AssertionError("not used")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", results=tmp_path / "results", name="rn-unit")


@pytest.fixture
def scenario() -> Scenario:
    return load_scenario(REPO / "scenarios" / "acl-basic.yaml")


def summary(path: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads((path / "summary.json").read_text())
    return value


def test_lab_failure_writes_an_error_summary(settings: Settings, scenario: Scenario) -> None:
    outcome = run_scenario(settings, scenario, FakeLab(settings))
    assert (outcome.status, outcome.exit_code) == ("error", 2)
    done = summary(outcome.bundle)
    assert done["status"] == "error"
    assert done["error"] == outcome.error
    assert str(outcome.error).startswith("qemu exited with status 1")
    assert (outcome.bundle / "junit.xml").exists()
    assert (settings.results / "acl-basic" / "latest").resolve() == outcome.bundle


def test_ctrl_c_writes_an_error_summary_and_exits_130(settings: Settings,
                                                      scenario: Scenario) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    outcome = run_scenario(settings, scenario, FakeLab(settings, on_up=interrupt))
    assert (outcome.status, outcome.exit_code) == ("error", 130)
    assert summary(outcome.bundle)["error"] == "interrupted (Ctrl-C)"


def test_a_lab_up_on_another_release_is_refused(settings: Settings,
                                                scenario: Scenario) -> None:
    lab = FakeLab(settings.with_overrides({"release": "bullseye"}), release="trixie",
                  state="up")
    outcome = run_scenario(lab.settings, scenario, lab)
    assert (outcome.status, outcome.exit_code) == ("error", 1)
    assert lab.ups == []  # nothing was started or run
    assert outcome.error == (
        "Lab 'rn-unit' is up on trixie (kernel 6.12.1), but this run asks for bullseye. "
        "Nothing was run. Either run on it with --release trixie, or use another lab "
        "(--name), or `invoke lab.destroy --name rn-unit` first.")
    assert summary(outcome.bundle)["status"] == "error"


def test_two_runs_on_one_lab_are_serialized(settings: Settings, scenario: Scenario,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    release = threading.Event()
    first = FakeLab(settings, on_up=lambda: release.wait(10))
    second = FakeLab(settings)
    outcomes = []
    thread = threading.Thread(target=lambda: outcomes.append(
        run_scenario(settings, scenario, first)))
    thread.start()
    while not first.ups:
        time.sleep(0.01)
    other = threading.Thread(target=lambda: outcomes.append(
        run_scenario(settings, scenario, second)))
    other.start()
    for _ in range(500):  # until the second run says it waits
        captured = capsys.readouterr()
        if "waiting for it to finish" in captured.err + captured.out:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the second run did not say it waits for the first")
    assert second.ups == []  # it waits for the lock, it does not run beside the first
    release.set()
    thread.join(10)
    other.join(10)
    assert second.ups and second.ups[0] >= first.ups[0]
    assert [o.exit_code for o in outcomes] == [2, 2]


def test_results_that_cannot_be_written_are_a_lab_failure(tmp_path: Path,
                                                          scenario: Scenario) -> None:
    (tmp_path / "results").write_text("a file, not a folder")
    settings = Settings(home=tmp_path / "home", results=tmp_path / "results")
    with pytest.raises(LabFailure, match=r"Could not write .*results/acl-basic"):
        run_scenario(settings, scenario, FakeLab(settings))


def test_results_disk_filling_during_the_run_is_a_clean_lab_failure(
        settings: Settings, scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    def fill_the_disk() -> None:
        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr("lab.results.bundle.os.fsync", full)

    outcome = run_scenario(settings, scenario, FakeLab(settings, on_up=fill_the_disk))
    assert (outcome.status, outcome.exit_code) == ("error", 2)
    assert "The results disk is full: could not write" in str(outcome.error)
    # The provisional summary is intact (never a 0-byte file): it says the run was under way.
    assert summary(outcome.bundle)["status"] == "running"
