"""`lab.ssh`: an interactive shell through OpenSSH, or one command through paramiko."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from lab.errors import LabError
from lab.ssh import Session, SshTarget


def interactive_shell(target: SshTarget, lab_dir: Path) -> None:
    """Replace this process with ssh, the host key pinned through a lab-only known_hosts."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise LabError("No ssh client: install the Debian package openssh-client.")
    known_hosts = lab_dir / "known_hosts"
    known_hosts.write_text(target.known_hosts_line())
    argv = [ssh, "-p", str(target.port), "-i", str(target.key_file),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
            "-o", "GlobalKnownHostsFile=/dev/null", f"{target.user}@{target.host}"]
    sys.stdout.flush()
    os.execv(ssh, argv)  # noqa: S606 (argv list, no shell)


def run_command(target: SshTarget, command: str, timeout: float = 3600.0) -> int:
    """Run one shell command, streaming its output; returns its exit status."""
    def out(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

    def err(data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()

    with Session(target) as ssh:
        result = ssh.run(command, timeout=timeout, on_stdout=out, on_stderr=err)
    if result.timed_out:
        raise LabError(f"`{command}` did not finish within {timeout:.0f} s and was stopped.")
    return result.exit_status
