"""The kernel matrix on real VMs (bullseye and bookworm labs under TCG)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import Settings, load_settings
from lab.host import processes_of as qemu_pids
from lab.matrix.orchestrate import run_matrix
from lab.matrix.table import NOT_APPLICABLE
from lab.scenario.load import load_scenario
from tests.helpers import REPO

PORTABLE = REPO / "scenarios" / "acl-portable.yaml"
BASIC = REPO / "scenarios" / "acl-basic.yaml"


@pytest.fixture
def vm_settings(tmp_path: Path) -> Iterator[Settings]:
    """The real cache (images), results in tmp_path; no lab of the test left running."""
    settings = load_settings().with_overrides({"results": tmp_path / "results"})
    yield settings
    left = qemu_pids(str(settings.labs_dir / "mxtest-"))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"qemu of the matrix test left running: {left}"


@pytest.mark.vm
def test_vm_portable_on_bullseye_and_bookworm(vm_settings: Settings) -> None:
    result = run_matrix(vm_settings, load_scenario(PORTABLE), ["bullseye", "bookworm"],
                        jobs=1, prefix="mxtest")
    matrix = result.matrix
    assert result.exit_code == 0, result.markdown
    bullseye, bookworm = matrix["releases"]
    assert bullseye["kernel"].startswith("5.10.") and bookworm["kernel"].startswith("6.1.")
    for r in (bullseye, bookworm):
        assert r["status"] == "passed" and r["btf"] and r["trampolines"]["supported"]
        assert r["bpftrace_probe"] == "kfunc" and r["ibt"] is False
        do_set_acl, ext4 = r["functions"]["do_set_acl"], r["functions"]["ext4_set_acl"]
        assert do_set_acl["exists"] is False
        assert do_set_acl["note"].startswith(
            f"not applicable: do_set_acl absent from {r['kernel']} (do_set_acl was added in 6.2")
        assert ext4["static_entry"]["text"] in ("callq __fentry__", "call __fentry__")
        assert ext4["live_attached"]["text"].startswith("call bpf_trampoline_")
        assert ext4["live_detached"]["bytes"] in ("66 66 66 66 90", "0f 1f 44 00 00")
    assert bullseye["functions"]["ext4_set_acl"]["signature"] == (
        "int ext4_set_acl(struct inode *inode, struct posix_acl *acl, int type)")
    assert bookworm["functions"]["ext4_set_acl"]["signature"].startswith(
        "int ext4_set_acl(struct user_namespace *mnt_userns, struct inode *inode")
    assert "## `ext4_set_acl`" in (result.path / "matrix.md").read_text()
    assert not (vm_settings.labs_dir / "mxtest-bullseye").exists()


@pytest.mark.vm
def test_vm_seed_is_not_applicable_on_bookworm(vm_settings: Settings) -> None:
    result = run_matrix(vm_settings, load_scenario(BASIC), ["bookworm"], prefix="mxtest")
    (bookworm,) = result.matrix["releases"]
    assert result.exit_code == 0
    assert bookworm["status"] == NOT_APPLICABLE
    assert bookworm["reason"] == (
        f"kernel {bookworm['kernel']} is older than the 6.3 this scenario needs; "
        f"`do_set_acl` is absent in {bookworm['kernel']}")
    assert bookworm["bundle"] is None
    assert bookworm["functions"]["do_set_acl"]["note"] == (
        f"not applicable: do_set_acl absent from {bookworm['kernel']}")
    assert f"| bookworm | {bookworm['kernel']} |" in result.markdown
