"""The command that starts a tool in its own session in the guest."""

from __future__ import annotations

import subprocess

from lab.run.tools import PGID_LINE, tool_command


def test_tool_runs_in_its_own_session_and_announces_its_group(tmp_path: object) -> None:
    command = tool_command(["sh", "-c", "echo out; echo err >&2"], "/")
    proc = subprocess.run(["sh", "-c", command], capture_output=True, timeout=10, check=False)
    assert proc.returncode == 0 and proc.stdout == b"out\n"
    found = PGID_LINE.search(proc.stderr)
    assert found and proc.stderr.endswith(b"err\n")


def test_arguments_are_quoted() -> None:
    command = tool_command(["printf", "%s|", "a b", "$HOME", "'q'"], "/")
    proc = subprocess.run(["sh", "-c", command], capture_output=True, timeout=10, check=False)
    assert proc.stdout == b"a b|$HOME|'q'|"
