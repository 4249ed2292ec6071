"""`scenario new`: signatures parsed from recorded `bpftrace -lv` output, skeletons written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import PreflightError, UsageError
from lab.run.scaffold import Param, parse_listing, probe_source, scenario_text, write_scaffold

DO_SET_ACL = """\
fentry:vmlinux:do_set_acl
    struct mnt_idmap * idmap
    struct dentry * dentry
    const char * acl_name
    const void * kvalue
    size_t size
    int retval
"""
GETPGID = "fentry:vmlinux:__x64_sys_getpgid\n    const struct pt_regs * regs\n    long int retval\n"


def test_signature_from_the_listing() -> None:
    sig = parse_listing("do_set_acl", DO_SET_ACL)
    assert sig.params[0] == Param("struct mnt_idmap *", "idmap")
    assert [p.name for p in sig.params] == ["idmap", "dentry", "acl_name", "kvalue", "size"]
    assert sig.returns == "int"
    assert [p.name for p in sig.params if p.scalar] == ["size"]


def test_old_bpftrace_kfunc_listing_gives_the_same_signature() -> None:
    old = "kfunc:ext4_set_acl\n    struct inode * inode;\n    int type;\n    int retval;\n"
    old += "BTF: using data from /sys/kernel/btf/vmlinux\n"
    sig = parse_listing("ext4_set_acl", old)
    assert [p.name for p in sig.params] == ["inode", "type"] and sig.returns == "int"


def test_an_absent_function_is_a_preflight_error() -> None:
    with pytest.raises(PreflightError, match="no traceable function `nope`"):
        parse_listing("nope", "")


def test_skeleton_has_fentry_fexit_and_records_scalars() -> None:
    text = probe_source(parse_listing("do_set_acl", DO_SET_ACL), fexit=True, kprobe=False)
    assert 'SEC("fentry/do_set_acl")' in text and 'SEC("fexit/do_set_acl")' in text
    assert "struct mnt_idmap *idmap" in text and "int ret)" in text
    assert "e->size = (__s64)size;" in text and "e->retval = (__s64)ret;" in text
    assert "Not recorded (pointers and structs): idmap, dentry, acl_name, kvalue" in text


def test_kprobe_skeleton() -> None:
    text = probe_source(parse_listing("__x64_sys_getpgid", GETPGID), fexit=False, kprobe=True)
    assert 'SEC("kprobe/__x64_sys_getpgid")' in text
    assert 'SEC("kretprobe/__x64_sys_getpgid")' in text and 'SEC("fentry' not in text


def test_write_refuses_bad_names_and_overwrites(tmp_path: Path) -> None:
    sig = parse_listing("do_set_acl", DO_SET_ACL)
    (tmp_path / "scenarios").mkdir()
    written = write_scaffold("my-acl", sig, tmp_path / "scenarios", tmp_path / "bpf",
                             fexit=True, kprobe=False)
    assert [p.name for p in written] == ["my-acl.yaml", "my-acl.bpf.c"]
    assert "source: bpf/my-acl/my-acl.bpf.c" in written[0].read_text()
    with pytest.raises(UsageError, match="exists already"):
        write_scaffold("my-acl", sig, tmp_path / "scenarios", tmp_path / "bpf", fexit=True,
                       kprobe=False)
    with pytest.raises(UsageError, match=r"Scenario name '\.\./x'"):
        write_scaffold("../x", sig, tmp_path / "scenarios", tmp_path / "bpf", fexit=True,
                       kprobe=False)


def test_scenario_text_names_the_function() -> None:
    text = scenario_text("x", parse_listing("do_set_acl", DO_SET_ACL), "bpf/x/x.bpf.c",
                         fexit=True, kprobe=False)
    assert "functions: [do_set_acl]" in text and "live_text: [do_set_acl]" in text
