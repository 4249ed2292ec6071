"""`fentry-lab` installed from a wheel into a fresh venv, used from a user's own directory.

One lab: lab.up (the printed ssh command pins the host key), the shipped acl-basic, the
user's own scenario with the user's own probe, lab.ssh-config used by the real OpenSSH
client, then lab.destroy, with no qemu left behind whatever happened.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from tests.integration.test_cli_wheel import installed, user_dir

__all__ = ["installed"]  # the module-scoped fixture that builds the venv


@pytest.fixture()
def lab(installed: Path, tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    name = f"cl-wheel-{os.getpid()}"
    mine = user_dir(tmp_path)
    try:
        yield installed, name, mine
    finally:
        subprocess.run([str(installed), "lab.destroy", "--name", name], cwd=mine,
                       capture_output=True, timeout=180, check=False)
        lab_dir = load_settings(environ={}).labs_dir / name
        left = qemu_pids(str(lab_dir))
        for pid in left:  # never leave a VM behind, even when the test failed
            os.kill(pid, signal.SIGKILL)
        assert not left, f"qemu left running for lab {name}: {left}"


def test_installed_fentry_lab_runs_the_seed_and_a_users_own_probe(
        lab: tuple[Path, str, Path]) -> None:
    fentry_lab, name, mine = lab
    env = {k: v for k, v in os.environ.items() if k not in ("FENTRY_LAB_NAME",
                                                             "FENTRY_LAB_RESULTS")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(fentry_lab), *args, "--name", name], cwd=mine, env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    up = cli("lab.up")
    assert up.returncode == 0, up.stderr
    command = shlex.split(up.stdout.strip().splitlines()[-1])
    assert "StrictHostKeyChecking=yes" in command
    assert any(part.startswith("UserKnownHostsFile=") for part in command)

    seed = cli("scenario", "run", "acl-basic")
    assert seed.returncode == 0, seed.stdout + seed.stderr
    assert (mine / "results" / "acl-basic" / "latest" / "summary.json").is_file()

    own = cli("scenario", "run", "my-acl", "--json")
    assert own.returncode == 0, own.stdout + own.stderr
    assert '"status": "passed"' in own.stdout

    config = mine / "ssh_config"
    block = cli("lab.ssh-config")
    assert block.returncode == 0, block.stderr
    config.write_text(block.stdout)
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                          f"fentry-lab-{name}", "uname", "-r"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.strip()
