"""A killed builder leaves no child running: SIGKILL, SIGTERM and a stale build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.image.buildproc import GROUP_FILE, remove_stale_builds
from tests.helpers import REPO

# A builder as build_image runs it: owner mark, watchdog, a child group that never ends.
BUILDER = """
import sys
from pathlib import Path
from lab.image.buildproc import Watchdog, mark_builder, run_in_group
build = Path(sys.argv[1])
mark_builder(build)
Watchdog(build)
run_in_group(["sh", "-c", "sleep 300 & sleep 301 & wait"], build=build, what="fake",
             on_line=print, env={})
"""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_builder(build: Path) -> tuple[subprocess.Popen[bytes], int]:
    build.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(build)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    for _ in range(200):  # counted attempts, not a deadline
        if (build / GROUP_FILE).is_file() and (build / GROUP_FILE).read_text():
            break
        time.sleep(0.05)
    pgid = int((build / GROUP_FILE).read_text())
    assert group_alive(pgid)
    return proc, pgid


def wait_for(condition: object, attempts: int = 200) -> bool:
    for _ in range(attempts):
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_builder_leaves_no_child_and_no_build(tmp_path: Path, sig: int) -> None:
    build = tmp_path / ".build-trixie-x"
    proc, pgid = start_builder(build)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    try:
        assert wait_for(lambda: not group_alive(pgid)), "the child group survived its builder"
        assert wait_for(lambda: not build.exists()), "the build directory was left behind"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_stale_build_with_a_live_child_group_is_stopped(tmp_path: Path) -> None:
    """A builder killed where no watchdog ran: the next build stops its group."""
    build = tmp_path / ".build-trixie-y"
    build.mkdir()
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (build / GROUP_FILE).write_text(str(child.pid))
        (build / "builder.pid").write_text("999999999 1")
        remove_stale_builds(tmp_path)
        assert child.wait(timeout=10) != 0 and not build.exists()
    finally:
        if child.poll() is None:
            child.kill()
