"""The host: commands (argv lists only, output streamed or captured, clear failures),
tools, and file locks."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from lab import console
from lab.errors import LabError


def require_tools(tools: Mapping[str, str]) -> None:
    """Fail with the Debian packages to install when any tool (name -> package) is missing."""
    missing = {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None
               and not Path("/usr/sbin", tool).exists() and not Path("/sbin", tool).exists()}
    if missing:
        names = ", ".join(f"{tool} (package {pkg})" for tool, pkg in missing.items())
        packages = " ".join(sorted(set(missing.values())))
        raise LabError(
            f"Missing host tools: {names}. Install them with `apt-get install {packages}` "
            "(or run the README's setup command, which installs everything the lab needs)."
        )


def tool_path(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin"):
        candidate = Path(directory, tool)
        if candidate.exists():
            return str(candidate)
    return tool


def run_streamed(
    argv: Sequence[str],
    *,
    what: str,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
    keep_lines: int = 40,
) -> list[str]:
    """Run argv, passing each output line (stdout and stderr merged) to on_line.

    Returns the last ``keep_lines`` lines; raises LabError with them when the command fails.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    with subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
        stdin=subprocess.DEVNULL, text=True, errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
        code = proc.wait()
    if code != 0:
        shown = "\n".join(f"    {line}" for line in tail)
        raise LabError(f"{what} failed (exit {code}). Last output:\n{shown}")
    return list(tail)


def run_checked(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    """Run argv quietly and return stdout; LabError with stderr on failure."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(list(argv), capture_output=True, text=True, errors="replace",
                          env=full_env, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise LabError(f"{what} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


@contextlib.contextmanager
def file_lock(path: Path, *, busy: str, wait: bool) -> Iterator[None]:
    """Hold an exclusive flock on path for the block.

    When another process holds it: with wait, say `busy` once and wait for it; without,
    raise LabError(busy) at once. The kernel drops the lock when its holder dies, however
    it dies, so a killed command never leaves a lab or an image locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LabError(busy) from None
            console.say(busy)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- processes ---------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks since boot), None when it is gone.

    With the pid, it names one process for good: a pid reused later has another start time.
    Unlike /proc/PID/cmdline, it is there from the first instant after fork.
    """
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        if fields[0] == "Z":  # a zombie has finished: it is not running anything
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def processes_of(marker: Path | str) -> list[int]:
    """PIDs of the processes whose command line contains marker (a lab's directory)."""
    needle = str(marker).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def is_process(pid: int, *, marker: Path | str, start_time: int = 0) -> bool:
    """True when pid is alive and is the process meant: same start time when one was
    recorded (a qemu in its first instants has an empty cmdline), else marker in its
    command line (a reused pid has another one)."""
    started = process_start_time(pid)
    if started is None:
        return False
    if start_time:
        return started == start_time
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(marker).encode() in cmdline
