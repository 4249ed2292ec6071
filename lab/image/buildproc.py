"""The build's child processes and mounts: started in their own session, never left behind.

mmdebstrap runs apt and dpkg in a chroot with /proc, /sys and /dev mounted. It runs in its
own session (so a terminal's Ctrl-C reaches only the builder, which then stops the whole
group) and under a small watchdog that notices the builder's death, however it dies (SIGKILL
included: its pipe closes), and then kills the group, unmounts and deletes the build. The
next build also cleans a stale build of a dead builder the same way.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lab.errors import LabError

PID_FILE = "builder.pid"
GROUP_FILE = "child.pgid"

# Run by the watchdog (python -c): wait for EOF on stdin; "done" means the builder finished.
_WATCHDOG = """
import sys
from lab.image.buildproc import cleanup_build
build = sys.argv[1]
if sys.stdin.read().strip() != "done":
    cleanup_build(__import__("pathlib").Path(build), remove=True)
"""


def mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _processes_in(path: Path) -> list[int]:
    """PIDs whose root or cwd lies inside path: apt/dpkg chrooted into the build tree."""
    prefix = str(path.resolve()) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for link in ("root", "cwd"):
            with contextlib.suppress(OSError):
                if (os.readlink(entry / link) + "/").startswith(prefix):
                    found.append(int(entry.name))
                    break
    return found


def _kill_group(pgid: int) -> None:
    for sig, pause in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def cleanup_build(build: Path, *, remove: bool) -> None:
    """Stop the build's processes, unmount what it mounted, optionally delete it."""
    with contextlib.suppress(OSError, ValueError):
        pgid = int((build / GROUP_FILE).read_text())
        if pgid > 1:
            _kill_group(pgid)
    for _ in range(3):  # stragglers that left the group (daemonized) but live in the tree
        pids = _processes_in(build)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    if remove:
        remove_build_dir(build)


def remove_build_dir(path: Path) -> None:
    """Delete a (partial) build, never through a mount point mmdebstrap may have left.

    A tree with /proc, /sys or /dev still mounted would otherwise have rmtree walk into the
    host's own files.
    """
    for point in mounts_below(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = mounts_below(path)
    if left:
        raise LabError(f"The unfinished build in {path} still has mounts ({', '.join(left)}); "
                       "it was not deleted. Unmount them (`umount -R`) and delete it by hand.")
    shutil.rmtree(path, ignore_errors=True)


def _builder_alive(build: Path) -> bool:
    try:
        pid_text, _, start = (build / PID_FILE).read_text().partition(" ")
        stat = Path(f"/proc/{int(pid_text)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return not start or stat.rsplit(")", 1)[1].split()[19] == start.strip()


def mark_builder(build: Path) -> None:
    """Record this process (pid and start time, against pid reuse) as the build's owner."""
    start = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (build / PID_FILE).write_text(f"{os.getpid()} {start}")


def remove_stale_builds(cache: Path) -> None:
    """Temporary build directories whose builder is gone (killed, power loss)."""
    for tmp in cache.glob(".build-*"):
        if not _builder_alive(tmp):
            cleanup_build(tmp, remove=True)


class Watchdog:
    """A process that cleans the build up if this builder dies before calling done()."""

    def __init__(self, build: Path) -> None:
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=str(root))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(build)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, text=True)

    def done(self) -> None:
        """The build is finished or already cleaned up: the watchdog exits without acting."""
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):
            self._proc.stdin.write("done\n")
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)


def run_in_group(argv: Sequence[str], *, build: Path, what: str, on_line: Callable[[str], None],
                 env: Mapping[str, str], keep_lines: int = 40) -> None:
    """Run argv in its own session, streaming its merged output; stop the group on any exit."""
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, **env}, text=True, errors="replace", start_new_session=True)
    (build / GROUP_FILE).write_text(str(proc.pid))
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds into the cleanup below

    in_main = True
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: the watchdog still covers a kill
        in_main = False
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
        code = proc.wait()
        (build / GROUP_FILE).unlink()  # the group is gone: never signal a reused pgid later
    except BaseException:
        cleanup_build(build, remove=False)
        proc.wait()
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        shown = "\n".join(f"    {line}" for line in tail)
        raise LabError(f"{what} failed (exit {code}). Last output:\n{shown}")
