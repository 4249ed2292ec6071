"""Lab directories stay inside labs_dir; a corrupt state file is reported, never a
traceback, and the lab's qemu is still found and stopped (real processes, no VM)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import Settings
from lab.errors import LabFailure, UsageError
from lab.host import file_lock, process_start_time
from lab.vm.base import LabState, lab_dir, lab_names
from lab.vm.qemu import QemuBackend


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a b/c", "a/b", "a,b", "-x",
                                  "x" * 64, "a\0b", "\u00e9t\u00e9"])
def test_names_that_could_escape_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="Invalid lab name"):
        lab_dir(tmp_path / "labs", name)
    with pytest.raises(UsageError):
        QemuBackend(Settings(home=tmp_path, name=name))
    assert not (tmp_path / "labs").exists()  # nothing created on the way


def test_a_symlinked_lab_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "evil").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="outside"):
        lab_dir(tmp_path / "labs", "evil")


def test_plain_names_resolve_inside(tmp_path: Path) -> None:
    for name in ("default", "vm-1", "a.b_c"):
        assert lab_dir(tmp_path / "labs", name) == (tmp_path / "labs" / name).resolve()


@pytest.mark.parametrize("content", ["{garbage", "", '"a string"', "[1, 2]",
                                     '{"pid": "12"}', '{"wanted": "yes"}', "\xff\xfe"])
def test_corrupt_state_is_flagged_not_raised(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content, errors="surrogateescape")
    state = LabState.load(path, "lab", "qemu")
    assert state.corrupt
    assert state.pid == 0
    assert "invoke lab.destroy --name lab" in state.corrupt_message(path)


def test_state_round_trip_keeps_wanted(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    LabState("lab", "qemu", pid=7, pid_start=99, wanted=True).save(path)
    state = LabState.load(path, "lab", "qemu")
    assert (state.pid, state.pid_start, state.wanted, state.corrupt) == (7, 99, True, "")
    assert state.label(False) == "dead"
    assert LabState("lab", "qemu", pid=7).label(False) == "down"  # a pid alone is not "wanted"


@pytest.fixture
def stray(tmp_path: Path) -> Iterator[tuple[QemuBackend, subprocess.Popen[bytes]]]:
    """A lab whose state file is garbage while a process with its overlay in the command
    line runs (as its qemu would)."""
    backend = QemuBackend(Settings(home=tmp_path, name="vm-corrupt"))
    backend.directory.mkdir(parents=True)
    backend.state_file.write_text("{garbage")
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "-name", "fentry-lab-vm-corrupt",
                             "-drive", f"file={backend.overlay},if=none"],
                            stdout=subprocess.PIPE)
    bystander = subprocess.Popen([sys.executable, "-c", code, str(backend.overlay)],
                                 stdout=subprocess.PIPE)  # not a qemu: never stopped
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    assert bystander.stdout is not None and bystander.stdout.readline() == b"ready\n"
    try:
        yield backend, proc
        assert bystander.poll() is None
    finally:
        for each in (proc, bystander):
            each.kill()
            each.wait()


def test_status_of_a_corrupt_lab(stray: tuple[QemuBackend, subprocess.Popen[bytes]]) -> None:
    backend, proc = stray
    status = backend.status()
    assert status.state == "corrupt"
    assert status.pid == proc.pid  # found by its lab directory
    assert "lab.destroy" in status.problem
    assert lab_names(backend.settings.labs_dir) == ["vm-corrupt"]


def test_up_and_ssh_of_a_corrupt_lab_say_so(
        stray: tuple[QemuBackend, subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend, _ = stray
    monkeypatch.setattr("lab.vm.qemu.require_tools", lambda tools: None)
    for call in (backend.up, backend.ssh_target):
        with pytest.raises(LabFailure, match="unreadable") as info:
            call()
        assert info.value.code == 2


@pytest.mark.parametrize("verb", ["down", "destroy"])
def test_down_and_destroy_stop_the_qemu_of_a_corrupt_lab(
        stray: tuple[QemuBackend, subprocess.Popen[bytes]], verb: str) -> None:
    backend, proc = stray
    getattr(backend, verb)()
    proc.wait(timeout=10)  # stopped, by its pid (and reaped by the backend)
    if verb == "destroy":
        assert not backend.directory.exists()
    else:
        assert not LabState.load(backend.state_file, "vm-corrupt", "qemu").corrupt


def test_a_process_is_known_by_pid_and_start_time_even_with_empty_cmdline(
        tmp_path: Path) -> None:
    """A qemu killed in its first instants has no cmdline yet: the recorded start time
    still recognises it (and a reused pid, with another start time, is not it)."""
    backend = QemuBackend(Settings(home=tmp_path, name="vm-early"))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start_time(proc.pid)
        assert start
        LabState("vm-early", "qemu", pid=proc.pid, pid_start=start, wanted=True) \
            .save(backend.state_file)
        assert backend.status(probe=False).state == "up"  # no marker in its cmdline
        LabState("vm-early", "qemu", pid=proc.pid, pid_start=start + 1, wanted=True) \
            .save(backend.state_file)
        assert backend.status(probe=False).state == "dead"
        LabState("vm-early", "qemu", pid=proc.pid, pid_start=start, wanted=True) \
            .save(backend.state_file)
        backend.destroy()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_destroy_waits_for_a_lab_that_is_starting(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """lab.destroy while lab.up holds the lab lock: it waits, then destroys (no
    FileNotFoundError from files vanishing under the starting command)."""
    backend = QemuBackend(Settings(home=tmp_path, name="vm-starting"))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
         " print('locked', flush=True); sys.stdin.readline()",
         str(backend.directory / "lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    backend.directory.mkdir(parents=True, exist_ok=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        done = threading.Event()

        def destroy() -> None:
            backend.destroy()
            done.set()

        worker = threading.Thread(target=destroy)
        worker.start()
        assert not done.wait(1.0)  # it waits for the lock holder ...
        assert holder.stdin is not None
        holder.stdin.write(b"\n")
        holder.stdin.flush()
        worker.join(30)
        assert done.is_set()  # ... then destroys
        assert not backend.directory.exists()
        assert "waiting for it to finish" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_file_lock_used_by_labs_is_per_path(tmp_path: Path) -> None:
    with file_lock(tmp_path / "a" / "lock", busy="busy", wait=False), \
            file_lock(tmp_path / "b" / "lock", busy="busy", wait=False):
        assert os.path.exists(tmp_path / "a" / "lock")
