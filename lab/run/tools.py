"""Probes that bring their own loader: bpftrace scripts and any command (a BCC tool,
a libbpf-tools binary), run in the guest as upstream runs them.

Such a tool prints no lab ready line, so it counts as attached when BPF programs that
were not loaded before it started show up in `bpftool prog show` and their number has
stopped changing. It runs in its own session (process group): stopping it sends SIGINT
to the whole group (bpftrace then prints its maps, BCC tools their summaries), then
SIGKILL if it lingers, and the lab checks that its programs are gone.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import paramiko

from lab.errors import LabFailure, ProbeLoadError
from lab.ssh import Session, drain

PGID_LINE = re.compile(rb"lab-tool: pgid=(\d+)\n")
POLL_S = 0.3


def program_ids(ssh: Session) -> set[int]:
    """The ids of every BPF program loaded in the guest kernel."""
    result = ssh.run(["bpftool", "-j", "prog", "show"], timeout=30)
    if result.exit_status != 0:
        raise LabFailure(f"`bpftool prog show` failed in the guest: {result.err.strip()}")
    try:
        listed = json.loads(result.out or "[]")
    except json.JSONDecodeError as exc:
        raise LabFailure(f"`bpftool -j prog show` printed no JSON: {exc}") from None
    return {int(p["id"]) for p in listed if isinstance(p, dict) and "id" in p}


def tool_command(argv: Sequence[str], cwd: str) -> str:
    """argv in its own session, announcing its process group first (for the stop)."""
    inner = f"cd {shlex.quote(cwd)} && echo \"lab-tool: pgid=$$\" >&2 && exec " + \
        shlex.join(argv)
    return f"exec setsid --wait sh -c {shlex.quote(inner)}"


@dataclass
class RunningTool:
    """One tool process in the guest, on its own SSH channel."""

    probe_name: str
    argv: tuple[str, ...]
    channel: paramiko.Channel
    before: set[int]
    pgid: int = 0
    exit_status: int | None = None
    programs: set[int] = field(default_factory=set)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def pump(self) -> None:
        drain(self.channel, self.stdout, self.stderr)
        if not self.pgid:
            found = PGID_LINE.search(bytes(self.stderr))
            if found:
                self.pgid = int(found.group(1))
                del self.stderr[found.start():found.end()]

    @property
    def log(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def output_lines(self) -> list[str]:
        return self.stdout.decode("utf-8", "replace").splitlines()

    def wait_attached(self, ssh: Session, timeout: float, settle: float) -> None:
        """Until new programs appear and their count holds for `settle` seconds."""
        deadline = time.monotonic() + timeout
        stable_since = 0.0
        while time.monotonic() < deadline:
            self.pump()
            if self.channel.exit_status_ready():
                self.pump()
                raise ProbeLoadError(
                    f"Probe {self.probe_name!r}: `{shlex.join(self.argv)}` exited with status "
                    f"{self.channel.recv_exit_status()} before attaching any program. Its "
                    f"output:\n{_tail(self.log + self.stdout.decode('utf-8', 'replace'))}")
            now_loaded = program_ids(ssh) - self.before
            if now_loaded and now_loaded == self.programs:
                if time.monotonic() - stable_since >= settle:
                    return
            else:
                self.programs = now_loaded
                stable_since = time.monotonic()
            time.sleep(POLL_S)
        raise ProbeLoadError(
            f"Probe {self.probe_name!r}: `{shlex.join(self.argv)}` loaded no BPF program "
            f"within {timeout:.0f} s (none new in `bpftool prog show`). Its output so far:\n"
            f"{_tail(self.log + self.stdout.decode('utf-8', 'replace'))}")

    def stop(self, ssh: Session, grace: float) -> list[str]:
        """SIGINT to the group, SIGKILL after `grace`; returns what is still loaded."""
        self.pump()
        if self.pgid and not self.channel.exit_status_ready():
            ssh.run(["/bin/kill", "-s", "INT", "--", f"-{self.pgid}"], timeout=10)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and not self.channel.exit_status_ready():
                self.pump()
                time.sleep(0.05)
            if not self.channel.exit_status_ready():
                ssh.run(["/bin/kill", "-s", "KILL", "--", f"-{self.pgid}"], timeout=10)
        deadline = time.monotonic() + grace
        while not self.channel.exit_status_ready() and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.05)
        self.pump()
        self.exit_status = self.channel.recv_exit_status() \
            if self.channel.exit_status_ready() else None
        self.channel.close()
        # The kernel frees a dead process's programs a moment after it exits.
        left = self.programs & program_ids(ssh)
        while left and time.monotonic() < deadline + grace:
            time.sleep(POLL_S)
            left &= program_ids(ssh)
        return [str(i) for i in sorted(left)]


def start_tool(ssh: Session, probe_name: str, argv: Sequence[str], cwd: str) -> RunningTool:
    before = program_ids(ssh)
    channel = ssh.open_channel(tool_command(argv, cwd))
    return RunningTool(probe_name, tuple(argv), channel, before)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-lines:])
