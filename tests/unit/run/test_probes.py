"""What goes into the guest: only the probes' files, never a symlink out of the project;
what the host keeps of their builds."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from lab.errors import ScenarioError
from lab.run.probes import build_key, pack_sources, prune_builds
from lab.scenario.load import load_scenario
from tests.helpers import REPO


def names(tarball: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        return tar.getnames()


# The guest helper's modules, and the ELF reader it shares with the host.
GUEST = ["guest/elf.py", "guest/fentry_lab_guest.py", "guest/kallsyms.py", "guest/later.py",
         "guest/live.py"]


def test_only_the_probes_files_are_uploaded() -> None:
    basic = load_scenario(REPO / "scenarios" / "acl-basic.yaml")
    assert names(pack_sources(REPO / "bpf", basic.probes)) == [
        "bpf/Makefile", "bpf/acl/acl_event.h", "bpf/acl/fentry.bpf.c", "bpf/acl/fentry.c",
        "bpf/acl/fexit.bpf.c", "bpf/acl/fexit.c", "bpf/loader/lab-loader.c",
        *GUEST]


def test_headers_included_from_another_directory_come_along() -> None:
    portable = load_scenario(REPO / "scenarios" / "acl-portable.yaml").for_kernel((5, 10, 0))
    uploaded = names(pack_sources(REPO / "bpf", portable.probes))
    assert "bpf/acl/acl_event.h" in uploaded  # ext4_acl.h includes ../acl/acl_event.h
    assert "bpf/acl/fentry.bpf.c" not in uploaded
    assert "bpf/bcc/acl_bcc.py" not in uploaded and "bpf/tests/verifier-reject.bpf.c" \
        not in uploaded


def test_bcc_probe_needs_no_loader() -> None:
    bcc = load_scenario(REPO / "scenarios" / "acl-bcc.yaml")
    assert names(pack_sources(REPO / "bpf", bcc.probes)) == [
        "bpf/Makefile", "bpf/bcc/acl_bcc.py", *GUEST]


def test_the_matrix_uploads_just_the_guest_helper() -> None:
    assert names(pack_sources(REPO / "bpf")) == [
        "bpf/Makefile", *GUEST]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "bpf", tmp_path / "proj" / "bpf",
                    ignore=shutil.ignore_patterns("build"))
    (tmp_path / "secret.txt").write_text("host secret\n")
    return tmp_path / "proj"


def test_symlink_out_of_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    link = project / "bpf" / "acl" / "notes.txt"
    link.symlink_to(tmp_path / "secret.txt")
    basic = load_scenario(REPO / "scenarios" / "acl-basic.yaml")
    with pytest.raises(ScenarioError, match=r"Refusing to upload .*/bpf/acl/notes.txt: it is a "
                                            r"symlink to .*/secret.txt, outside the project"):
        pack_sources(project / "bpf", basic.probes)
    # A symlink in a directory no probe uses is not even looked at.
    link.unlink()
    (project / "bpf" / "tests" / "x").symlink_to(tmp_path / "secret.txt")
    assert b"host secret" not in pack_sources(project / "bpf", basic.probes)


def test_symlink_inside_the_project_is_followed(project: Path) -> None:
    (project / "bpf" / "acl" / "event.h").symlink_to("acl_event.h")
    basic = load_scenario(REPO / "scenarios" / "acl-basic.yaml")
    assert "bpf/acl/event.h" in names(pack_sources(project / "bpf", basic.probes))


def test_a_header_include_symlinked_out_is_refused(project: Path, tmp_path: Path) -> None:
    header = project / "bpf" / "acl" / "acl_event.h"
    (tmp_path / "acl_event.h").write_bytes(header.read_bytes())
    header.unlink()
    header.symlink_to(tmp_path / "acl_event.h")
    portable = load_scenario(REPO / "scenarios" / "acl-portable.yaml").for_kernel((5, 10, 0))
    with pytest.raises(ScenarioError, match=r"acl_event\.h: it is a symlink"):
        pack_sources(project / "bpf", portable.probes)


def test_prune_builds_removes_only_what_no_run_used_lately(tmp_path: Path) -> None:
    now = time.time()
    old, fresh = now - 40 * 86400, now - 86400
    (tmp_path / "builds").mkdir()
    for name, when in (("aaa.tar", old), ("bench-bbb.tar", old), ("ccc.tar", fresh)):
        path = tmp_path / "builds" / name
        path.write_bytes(b"x")
        os.utime(path, (when, when))
    for key, when in (("aaa", old), ("ccc", fresh)):
        path = tmp_path / "btf" / key / "acl_fentry.btf.json"
        path.parent.mkdir(parents=True)
        path.write_text("{}")
        os.utime(path, (when, when))
    removed = prune_builds(tmp_path, max_age_days=30, now=now)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == [
        "btf/aaa", "builds/aaa.tar", "builds/bench-bbb.tar"]
    assert (tmp_path / "builds" / "ccc.tar").exists() and (tmp_path / "btf" / "ccc").exists()
    assert prune_builds(tmp_path / "nowhere") == []


def test_the_build_key_follows_the_probes_not_the_guest_helper() -> None:
    basic = load_scenario(REPO / "scenarios" / "acl-basic.yaml").probes

    def tarball(helper: bytes, probe: bytes = b"") -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(pack_sources(REPO / "bpf", basic))) as src, \
                tarfile.open(fileobj=buf, mode="w") as out:
            for member in src:
                data = src.extractfile(member)
                assert data is not None
                body = data.read() + (helper if member.name.startswith("guest/") else
                                      probe if member.name == "bpf/acl/fentry.bpf.c" else b"")
                member.size = len(body)
                out.addfile(member, io.BytesIO(body))
        return buf.getvalue()

    key = build_key(tarball(b""), "6.12.1", "digest")
    assert build_key(tarball(b"# a helper change\n"), "6.12.1", "digest") == key
    assert build_key(tarball(b"", b"// a probe change\n"), "6.12.1", "digest") != key
    assert build_key(tarball(b""), "6.12.2", "digest") != key
    assert build_key(tarball(b""), "6.12.1", "other") != key
