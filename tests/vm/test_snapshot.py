"""Ready snapshots for real: restore, guest fix-up, lab.reset, a broken snapshot.

One VM at a time: labs restored "side by side" are restored one after the other from the
same snapshot and compared. Every lab is destroyed and checked for leftover qemu.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import load_settings
from lab.host import processes_of as qemu_pids
from tests.helpers import INVOKE, REPO

pytestmark = pytest.mark.vm


class Lab:
    def __init__(self, name: str, results: Path) -> None:
        self.name = name
        self.env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_RESULTS": str(results)}

    @property
    def directory(self) -> Path:
        return load_settings().labs_dir / self.name

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([INVOKE, *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def ssh(self, command: str) -> str:
        proc = self("lab.ssh", "-c", command, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def destroy(self) -> None:
        self("lab.destroy", timeout=120)
        left = qemu_pids(str(self.directory))
        for pid in left:  # never leave a VM behind, even when the test failed
            os.kill(pid, signal.SIGKILL)
        assert not left, f"qemu processes left running for lab {self.name}: {left}"


@pytest.fixture()
def labs(tmp_path: Path) -> Iterator[list[Lab]]:
    made: list[Lab] = []
    yield made
    for lab in made:
        lab.destroy()


def new_lab(labs: list[Lab], tmp_path: Path, tag: str) -> Lab:
    lab = Lab(f"sn-{os.getpid()}-{tag}", tmp_path / "results")
    labs.append(lab)
    return lab


def snapshot_dirs() -> list[Path]:
    """trixie's ready snapshots (not trixie-backports': this module's labs never use them,
    and a truncated one would cost the next user of that release a cold boot)."""
    root = load_settings().home / "snapshots"
    return [p for p in root.glob("trixie-*") if re.fullmatch(r"trixie-[0-9a-f]{16}", p.name)] \
        if root.is_dir() else []


def up_from_snapshot(lab: Lab) -> None:
    """lab.up; a cold boot first (once) when no snapshot exists yet."""
    up = lab("lab.up")
    assert up.returncode == 0, up.stderr
    if "from snapshot" not in up.stderr:
        assert "saved ready snapshot" in up.stderr, up.stderr
        lab.destroy()
        up = lab("lab.up")
        assert up.returncode == 0 and "from snapshot" in up.stderr, up.stderr


def guest_facts(lab: Lab) -> tuple[float, str, str]:
    """(guest clock minus host clock, boot_id, 32 random bytes) in one SSH command."""
    before = time.time()
    out = lab.ssh("date +%s.%N; cat /proc/sys/kernel/random/boot_id; "
                  "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'").split()
    after = time.time()
    guest = float(out[0])
    skew = 0.0 if before - 2 <= guest <= after + 2 else guest - after
    return skew, out[1], out[2]


def test_restored_labs_get_the_host_clock_and_their_own_boot_id_and_rng(
        labs: list[Lab], tmp_path: Path) -> None:
    first = new_lab(labs, tmp_path, "one")
    up_from_snapshot(first)
    skew_one, boot_one, random_one = guest_facts(first)
    first.destroy()

    second = new_lab(labs, tmp_path, "two")
    up = second("lab.up")
    assert up.returncode == 0 and "from snapshot" in up.stderr, up.stderr
    skew_two, boot_two, random_two = guest_facts(second)

    assert skew_one == 0.0 and skew_two == 0.0, (skew_one, skew_two)
    saved = {json.loads((d / "manifest.json").read_text())["boot_id"] for d in snapshot_dirs()}
    assert boot_one != boot_two and not {boot_one, boot_two} & saved
    assert random_one != random_two
    # the pinned host key still answers (lab.ssh pins it): nothing to re-trust after restore
    assert "reseeded due to virtual machine fork" in second.ssh("dmesg | tail -5")


def test_reset_discards_guest_changes_and_fresh_runs_start_clean(
        labs: list[Lab], tmp_path: Path) -> None:
    lab = new_lab(labs, tmp_path, "reset")
    up_from_snapshot(lab)
    lab.ssh("echo dirty > /root/sn-marker && sync")
    reset = lab("lab.reset")
    assert reset.returncode == 0 and "from snapshot" in reset.stderr, reset.stderr
    assert lab.ssh("ls /root/sn-marker 2>/dev/null || echo gone").strip() == "gone"

    lab.ssh("echo dirty > /root/sn-marker")
    run = lab("scenario", "run", "acl-basic", "--fresh")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "from snapshot" in run.stderr
    assert lab.ssh("ls /root/sn-marker 2>/dev/null || echo gone").strip() == "gone"


def test_a_truncated_snapshot_means_a_cold_boot_and_a_new_snapshot(
        labs: list[Lab], tmp_path: Path) -> None:
    lab = new_lab(labs, tmp_path, "broken")
    up_from_snapshot(lab)
    lab.destroy()
    for directory in snapshot_dirs():
        state = directory / "state.zst"
        with state.open("r+b") as f:
            f.truncate(state.stat().st_size // 2)
    up = lab("lab.up")
    assert up.returncode == 0, up.stderr
    assert "unusable" in up.stderr and "truncated" in up.stderr, up.stderr
    assert "saved ready snapshot" in up.stderr, up.stderr
    lab.destroy()
    again = lab("lab.up")
    assert again.returncode == 0 and "from snapshot" in again.stderr, again.stderr
