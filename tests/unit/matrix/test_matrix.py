"""The kernel matrix: the table from recorded runs, parsing, orchestration, and real VMs.

tests/data/matrix/acl-portable is a real `invoke matrix run acl-portable` on bullseye,
bookworm and trixie under TCG, trimmed to the files the table is built from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lab.config import Settings
from lab.errors import LabError
from lab.image.build import Image
from lab.matrix.__main__ import main
from lab.matrix.disasm import (
    bpftrace_kind,
    entry_prefix,
    parse_objdump,
    signature_from_bpftrace,
    tidy_asm,
)
from lab.matrix.markdown import render_markdown
from lab.matrix.orchestrate import default_jobs, matrix_settings, parse_releases, run_matrix
from lab.matrix.rows import Trampolines
from lab.matrix.table import (
    LAB_ERROR,
    NOT_APPLICABLE,
    MatrixRun,
    build_matrix,
    merge_runs,
    read_matrix,
    trampoline_support,
)
from lab.run.guest import Facts
from lab.run.preflight import preflight_problems
from lab.run.runner import Outcome
from lab.scenario.load import load_scenario
from lab.ssh import SshTarget
from lab.vm.base import LabStatus, RunningLab
from tests.helpers import REPO

RECORDED = REPO / "tests" / "data" / "matrix" / "acl-portable"
PORTABLE = REPO / "scenarios" / "acl-portable.yaml"
BASIC = REPO / "scenarios" / "acl-basic.yaml"


@pytest.fixture(scope="module")
def matrix() -> dict[str, Any]:
    return build_matrix(RECORDED)


def row(matrix: dict[str, Any], release: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in matrix["releases"] if r["release"] == release)
    return found


# --------------------------------------------------------------------------- recorded run


def test_release_rows(matrix: dict[str, Any]) -> None:
    assert matrix["scenario"] == "acl-portable"
    assert matrix["run_id"] == "20261125T145443460Z"
    assert matrix["targets"] == ["do_set_acl", "ext4_set_acl"]
    assert [r["release"] for r in matrix["releases"]] == ["bullseye", "bookworm", "trixie"]
    kernels = {r["release"]: (r["kernel"], r["version"]) for r in matrix["releases"]}
    assert kernels == {"bullseye": ("5.10.0-32-cloud-amd64", [5, 10, 0]),
                       "bookworm": ("6.1.0-50-cloud-amd64", [6, 1, 0]),
                       "trixie": ("6.12.117+deb13-cloud-amd64", [6, 12, 117])}
    for r in matrix["releases"]:
        assert r["btf"] is True
        assert r["trampolines"]["supported"] is True
        assert r["status"] == "passed"
        assert r["expectations"] == {"ok": 10, "total": 10}
    assert [r["ibt"] for r in matrix["releases"]] == [False, False, True]
    assert [r["bpftrace_probe"] for r in matrix["releases"]] == ["kfunc", "kfunc", "fentry"]
    assert [r["variant"] for r in matrix["releases"]] == [
        "requires.alternatives[1] (kernel < 5.12)",
        "requires.alternatives[0] (5.12 <= kernel < 6.2)", "main"]
    assert row(matrix, "bullseye")["bundle"] == "bullseye/acl-portable/20261125T145453562Z"
    assert matrix["sum_of_releases_s"] == pytest.approx(31.3 + 39.2 + 41.6)


def test_fentry_static_bytes(matrix: dict[str, Any]) -> None:
    assert row(matrix, "bullseye")["fentry_static"] == {
        "bytes": "e9 6b 65 ba 00", "text": "jmpq __x86_return_thunk"}
    assert row(matrix, "bookworm")["fentry_static"]["text"] == "jmp __x86_return_thunk"
    trixie = row(matrix, "trixie")["fentry_static"]
    assert trixie["text"] == "endbr64; nop x9; jmp __x86_return_thunk"
    assert trixie["bytes"].startswith("f3 0f 1e fa 90 ")


def test_absent_function_is_not_applicable_with_the_reason(matrix: dict[str, Any]) -> None:
    for release, kernel, first in (("bullseye", "5.10.0-32-cloud-amd64", "struct inode *"),
                                   ("bookworm", "6.1.0-50-cloud-amd64",
                                    "struct user_namespace *, struct inode *")):
        cell = row(matrix, release)["functions"]["do_set_acl"]
        assert (cell["exists"], cell["signature"], cell["static_entry"]) == (False, None, None)
        assert cell["live_attached"] is None
        assert cell["note"] == (
            f"not applicable: do_set_acl absent from {kernel} (do_set_acl was added in 6.2; "
            f"setfacl reaches ext4_set_acl({first}, ...))")


def test_signatures_differ_per_kernel(matrix: dict[str, Any]) -> None:
    signatures = {r["release"]: r["functions"]["ext4_set_acl"]["signature"]
                  for r in matrix["releases"]}
    assert signatures == {
        "bullseye": "int ext4_set_acl(struct inode *inode, struct posix_acl *acl, int type)",
        "bookworm": "int ext4_set_acl(struct user_namespace *mnt_userns, struct inode *inode, "
                    "struct posix_acl *acl, int type)",
        "trixie": "int ext4_set_acl(struct mnt_idmap *idmap, struct dentry *dentry, "
                  "struct posix_acl *acl, int type)",
    }
    assert row(matrix, "trixie")["functions"]["do_set_acl"]["signature"] == (
        "int do_set_acl(struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name, "
        "const void *kvalue, size_t size)")


def test_entry_bytes_static_and_live(matrix: dict[str, Any]) -> None:
    bullseye = row(matrix, "bullseye")["functions"]["ext4_set_acl"]
    assert bullseye["static_entry"] == {"bytes": "e8 9b 9d c7 ff", "text": "callq __fentry__"}
    assert bullseye["live_detached"]["bytes"] == "66 66 66 66 90"  # 5.10's ideal nop
    assert bullseye["live_attached"]["bytes"].startswith("e8 ")
    assert bullseye["live_attached"]["text"] == "call bpf_trampoline_38332_1"
    bookworm = row(matrix, "bookworm")["functions"]["ext4_set_acl"]
    assert bookworm["live_detached"]["bytes"] == "0f 1f 44 00 00"
    assert bookworm["live_attached"]["text"].startswith("call bpf_trampoline_")
    trixie = row(matrix, "trixie")["functions"]
    assert trixie["do_set_acl"]["static_entry"]["text"] == "endbr64; call __fentry__"
    # IBT: the endbr64 of a function never called indirectly is sealed into a nop ...
    assert trixie["do_set_acl"]["live_detached"]["bytes"] == "66 0f 1f 00 0f 1f 44 00 00"
    assert trixie["do_set_acl"]["live_attached"]["text"] == (
        "nopw (%rax); call bpf_trampoline_6442515972")
    # ... while ext4_set_acl, an inode operation, keeps it; it was not probed on trixie.
    assert trixie["ext4_set_acl"]["live_detached"]["bytes"] == "f3 0f 1e fa 0f 1f 44 00 00"
    assert trixie["ext4_set_acl"]["live_attached"] is None
    assert trixie["ext4_set_acl"]["note"] == "present, not probed here (main)"


def test_markdown(matrix: dict[str, Any]) -> None:
    text = render_markdown(read_matrix(RECORDED))
    lines = text.splitlines()
    assert lines[0] == "# Kernel matrix: acl-portable"
    assert ("| bullseye | 5.10.0-32-cloud-amd64 | yes | yes (5.10 >= 5.5, "
            "DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y, BPF_JIT=y) | no | v0.11.3 (kfunc:) | - | "
            "requires.alternatives[1] (kernel < 5.12) | passed (10/10 expectations) |") in lines
    assert ("| bookworm | no | - | - | - | - | not applicable: do_set_acl absent from "
            "6.1.0-50-cloud-amd64 (do_set_acl was added in 6.2; setfacl reaches "
            "ext4_set_acl(struct user_namespace *, struct inode *, ...)) |") in lines
    assert ("| bullseye | yes | `int ext4_set_acl(struct inode *inode, struct posix_acl *acl, "
            "int type)` | `e8 9b 9d c7 ff` callq __fentry__ | `66 66 66 66 90` data16 data16 "
            "data16 xchg %ax,%ax | `e8 cb 01 b6 09` call bpf_trampoline_38332_1 | - |") in lines
    assert "| trixie | `f3 0f 1e fa 90 90 90 90 90 90 90 90 90 e9 ae 01 c4 00` | endbr64; " \
           "nop x9; jmp __x86_return_thunk |" in lines
    assert "## `do_set_acl`" in lines and "## `ext4_set_acl`" in lines
    assert "| trixie | 7.0 | 8.7 | 25.8 | 0.1 | 41.6 |" in lines
    assert all(line.count("|") in (0, 10, 8, 4, 7) or not line.startswith("|")
               for line in lines)


def test_table_survives_missing_and_not_applicable_releases(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RECORDED, run)
    # bookworm: the lab never came up (no facts); trixie: preflight said no.
    shutil.rmtree(run / "bookworm")
    (run / "bookworm").mkdir()
    (run / "bookworm" / "release.json").write_text(json.dumps(
        {"release": "bookworm", "status": LAB_ERROR, "reason": "qemu exited", "timings": {}}))
    record = json.loads((run / "trixie" / "release.json").read_text())
    record.update(status=NOT_APPLICABLE, reason="do_set_acl is absent in X", bundle=None)
    (run / "trixie" / "release.json").write_text(json.dumps(record))
    matrix = build_matrix(run)
    table = read_matrix(run)
    bookworm, trixie = row(matrix, "bookworm"), row(matrix, "trixie")
    assert bookworm["status"] == LAB_ERROR and bookworm["kernel"] is None
    assert bookworm["functions"]["do_set_acl"]["note"] == "unknown: no facts recorded"
    assert trixie["functions"]["do_set_acl"]["live_attached"] is None
    assert trixie["functions"]["ext4_set_acl"]["note"] == "present"
    text = render_markdown(table)
    assert "| bookworm | - | ? | ? | ? | - | - | - | lab error: qemu exited |" in text
    assert "not applicable: do_set_acl is absent in X |" in text
    assert MatrixRun(run, matrix, text).exit_code == 2
    # A release that left nothing at all is a lab error too, not a crash.
    shutil.rmtree(run / "bookworm")
    assert row(build_matrix(run), "bookworm")["status"] == LAB_ERROR


def test_exit_code() -> None:
    def code(*statuses: str) -> int:
        matrix = {"releases": [{"status": s} for s in statuses]}
        return MatrixRun(Path("."), matrix, "").exit_code

    assert code("passed", NOT_APPLICABLE) == 0
    assert code("passed", "failed") == 1
    assert code("error", "passed") == 1
    assert code("failed", LAB_ERROR) == 2


def test_merge_runs_from_several_machines(tmp_path: Path, matrix: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    parts = []
    for name, releases in (("a", ["bullseye", "bookworm"]), ("b", ["trixie"])):
        part = tmp_path / name
        shutil.copytree(RECORDED, part)
        run = json.loads((part / "run.json").read_text())
        (part / "run.json").write_text(json.dumps({**run, "run_id": name,
                                                   "releases": releases}))
        parts.append(part)
    merged = merge_runs(parts, tmp_path / "merged")
    assert merged.matrix["releases"] == matrix["releases"]
    assert merged.matrix["jobs"] == "per machine"
    assert (tmp_path / "merged" / "matrix.md").read_text() == merged.markdown
    assert main(["table", str(tmp_path / "merged")]) == 0
    assert capsys.readouterr().out == merged.markdown
    assert main(["merge", str(tmp_path / "m2"), *map(str, parts)]) == 0
    assert main(["merge", str(tmp_path / "m3"), str(tmp_path)]) == 1
    assert "Not a matrix run" in capsys.readouterr().err
    assert main(["bogus"]) == 1  # a usage error, not "the lab failed"
    assert "usage: python -m lab.matrix merge" in capsys.readouterr().err
    other = json.loads((parts[1] / "run.json").read_text())
    (parts[1] / "run.json").write_text(json.dumps({**other, "scenario": "acl-basic"}))
    with pytest.raises(LabError, match="different scenarios: acl-basic, acl-portable"):
        merge_runs(parts, tmp_path / "m4")


# --------------------------------------------------------------------------- parsing


def test_ibt_cell_says_whether_the_kernel_enforces_it() -> None:
    from lab.matrix.markdown import ibt_text

    base = read_matrix(RECORDED).releases[0]
    cells = [ibt_text(dataclasses.replace(base, ibt=ibt, ibt_active=active))
             for ibt, active in [(None, None), (False, False), (True, None), (True, True),
                                 (True, False)]]
    assert cells == ["?", "no", "built in", "built in, active", "built in, not active (CPU)"]


def test_signature_from_every_bpftrace() -> None:
    old = ("# bpftrace -lv 'kfunc:ext4_set_acl'\nkfunc:ext4_set_acl\n    struct inode * inode;\n"
           "    int type;\n    int retval;\nBTF: using data from /sys/kernel/btf/vmlinux\n")
    assert signature_from_bpftrace("ext4_set_acl", old) == (
        "int ext4_set_acl(struct inode *inode, int type)")
    new = ("fentry:vmlinux:do_set_acl\n    const char * acl_name\n    size_t size\n"
           "    int retval\n")
    assert signature_from_bpftrace("do_set_acl", new) == (
        "int do_set_acl(const char *acl_name, size_t size)")
    # bpftrace 0.27 lists retval under fexit: only, which is why the guest asks for it.
    fexit = "fexit:vmlinux:do_set_acl\n    size_t size\n    int retval\n"
    assert signature_from_bpftrace("do_set_acl", fexit) == "int do_set_acl(size_t size)"
    void = "kfunc:vmlinux:f\n    struct file * file\n"
    assert signature_from_bpftrace("f", void) == "void f(struct file *file)"
    assert signature_from_bpftrace("g", "kfunc:vmlinux:g\n") == "void g(void)"
    absent = "# bpftrace -lv 'kfunc:do_set_acl'\nBTF: using data from /sys/kernel/btf/vmlinux\n"
    assert signature_from_bpftrace("do_set_acl", absent) is None
    assert signature_from_bpftrace("do_set_acl", "") is None
    # A listing of another function with the name as a prefix is not this one.
    assert signature_from_bpftrace("do_set", "kfunc:vmlinux:do_set_acl\n    int x\n") is None


def test_objdump_parsing() -> None:
    text = (
        "# objdump -d --disassemble=f vmlinux\n"
        "ffffffff814d3a20 <f>:\n"
        "ffffffff814d3a20:\tf3 0f 1e fa          \tendbr64\n"
        "ffffffff814d3a24:\te8 87 8a bb ff       \tcall   ffffffff8108c4b0 <__fentry__>\n"
        "ffffffff814d3a3d:\t65 48 8b 05 bb 15 b6 \tmov    %gs:0x7eb615bb(%rip),%rax"
        "        # 35000 <pcpu_hot>\n"
        "ffffffff814d3a44:\t7e \n"
    )
    insns = parse_objdump(text)
    assert [i["text"] for i in insns] == ["endbr64", "call __fentry__",
                                         "mov %gs:0x7eb615bb(%rip),%rax"]
    assert insns[2]["bytes"] == "65 48 8b 05 bb 15 b6 7e"
    assert [i["text"] for i in entry_prefix(insns)] == ["endbr64", "call __fentry__"]
    assert tidy_asm("jmpq   ffffffff81c02140 <__x86_return_thunk>") == "jmpq __x86_return_thunk"
    assert parse_objdump("# f: not found in vmlinux\n") == []
    assert entry_prefix([]) == []


def test_entry_prefix_without_fentry_call() -> None:
    insns = [{"address": "0", "bytes": "55", "text": "push %rbp"},
             {"address": "1", "bytes": "48 89 e5", "text": "mov %rsp,%rbp"},
             {"address": "4", "bytes": "c3", "text": "ret"}]
    assert entry_prefix(insns) == insns[:2]


def test_trampoline_support_and_bpftrace_kind() -> None:
    config = {"CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS": "y", "CONFIG_BPF_JIT": "y"}
    assert trampoline_support([5, 10, 0], config).supported is True
    old = trampoline_support([5, 4, 0], {**config, "CONFIG_BPF_JIT": "n"})
    assert old == Trampolines(False, "kernel older than 5.5; no CONFIG_BPF_JIT")
    assert trampoline_support([6, 1], {}).why == (
        "no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS; no CONFIG_BPF_JIT")
    assert bpftrace_kind("bpftrace v0.11.3") == "kfunc"
    assert bpftrace_kind("bpftrace v0.23.2") == "fentry"
    assert bpftrace_kind("missing") is None and bpftrace_kind(None) is None


def facts_for(release: str, version: list[int], present: dict[str, bool], btf: bool = True,
              traceable: bool = True, debug_id: str = "aa") -> Facts:
    return Facts.parse({
        "kernel": {"release": release, "version": version, "btf": btf,
                   "build_id_running": "aa", "build_id_debug_vmlinux": debug_id},
        "traceable": {fn: ok and traceable for fn, ok in present.items()},
        "in_kallsyms": dict(present)})


def test_preflight_problems() -> None:
    portable = load_scenario(PORTABLE)
    basic = load_scenario(BASIC)
    bookworm = facts_for("6.1.0-50-cloud-amd64", [6, 1, 0],
                         {"do_set_acl": False, "ext4_set_acl": True})
    assert preflight_problems(portable.for_kernel((6, 1, 0)), bookworm) == []
    assert preflight_problems(basic.for_kernel((6, 1, 0)), bookworm) == [
        "kernel 6.1.0-50-cloud-amd64 is older than the 6.3 this scenario needs",
        "`do_set_acl` is absent in 6.1.0-50-cloud-amd64"]
    # An alternative whose function is missing gives the alternative's reason.
    bare = facts_for("5.10.0-32-cloud-amd64", [5, 10, 0], {"ext4_set_acl": False}, btf=False)
    assert preflight_problems(portable.for_kernel((5, 10, 0)), bare) == [
        "kernel 5.10.0-32-cloud-amd64 has no BTF (/sys/kernel/btf/vmlinux), which fentry/fexit "
        "need",
        "`ext4_set_acl` is absent in 5.10.0-32-cloud-amd64: do_set_acl was added in 6.2; "
        "setfacl reaches ext4_set_acl(struct inode *, ...)"]
    hidden = facts_for("6.12.1", [6, 12, 1], {"do_set_acl": True}, traceable=False)
    assert preflight_problems(basic, hidden) == [
        "`do_set_acl` exists but is not traceable (not in available_filter_functions) in 6.12.1"]
    # The matrix uses the runner's preflight: a debug vmlinux of another build is refused.
    other = facts_for("6.12.1", [6, 12, 1], {"do_set_acl": True}, debug_id="bb")
    assert preflight_problems(basic, other) == [
        "the debug vmlinux's build ID bb differs from the running kernel's aa"]


def test_parse_releases() -> None:
    images = REPO / "images"
    assert parse_releases(None, images) == ["bullseye", "bookworm", "trixie", "trixie-backports",
                                            "sid"]
    assert parse_releases("trixie, bookworm,trixie", images) == ["trixie", "bookworm"]
    assert parse_releases(["bullseye"], images) == ["bullseye"]
    with pytest.raises(LabError, match=r"Unknown release\(s\) forky: use a comma-separated"):
        parse_releases("trixie,forky", images)
    with pytest.raises(LabError, match=r"\(none given\)"):
        parse_releases(" , ", images)


def test_default_jobs_and_settings(tmp_path: Path) -> None:
    assert default_jobs(3, host_cpus=2, available_mib=20000) == 3
    assert default_jobs(2, host_cpus=2, available_mib=20000) == 2
    assert default_jobs(3, host_cpus=1, available_mib=20000) == 2
    assert default_jobs(3, host_cpus=2, available_mib=4000) == 1  # 2 GiB labs: memory caps
    assert default_jobs(3, host_cpus=2, available_mib=100) == 1
    assert 1 <= default_jobs(3) <= 3
    settings = matrix_settings(Settings(home=tmp_path), "bookworm", tmp_path / "run", "mx")
    assert (settings.release, settings.name) == ("bookworm", "mx-bookworm")
    assert settings.results == tmp_path / "run" / "bookworm"


# --------------------------------------------------------------------------- orchestration


class FakeBackend:
    """Records calls; up() fails for releases listed in `broken`."""

    name = "fake"
    calls: ClassVar[list[tuple[str, str]]] = []
    broken: ClassVar[set[str]] = set()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    lab_dir = Path("/nonexistent")

    def names(self) -> list[str]:
        return [self.settings.name]

    def up(self) -> RunningLab:
        self.calls.append(("up", self.settings.name))
        if self.settings.release in self.broken:
            raise LabError("qemu exited with status 1 before the guest was ready.", code=2)
        target = SshTarget("127.0.0.1", 1, "root", Path("/nonexistent"), "ssh-ed25519", "AAAA")
        return RunningLab(target, "", "tcg")

    def down(self) -> None:
        self.calls.append(("down", self.settings.name))

    def destroy(self) -> None:
        self.calls.append(("destroy", self.settings.name))

    def status(self, *, probe: bool = True) -> LabStatus:
        return LabStatus(self.settings.name, "fake", "up", self.settings.release, "", "tcg",
                         1, 1, 1.0)

    def ssh_target(self) -> SshTarget:
        return self.up().target

    def serial_log(self) -> Path:
        return Path("/nonexistent")

    def reset(self) -> RunningLab:
        raise AssertionError("not used")


KERNELS = {"bullseye": "5.10.0-32-cloud-amd64", "bookworm": "6.1.0-50-cloud-amd64",
           "trixie": "6.12.117+deb13-cloud-amd64"}


@pytest.fixture
def fake_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """run_matrix without VMs: images, SSH, facts and the runner replaced by recordings."""
    ran: list[str] = []

    def find_image(settings: Settings, release: str | None = None) -> Image:
        name = release or settings.release
        return Image(tmp_path / name, {"kernel_release": KERNELS[name], "build_id": name,
                                       "release": name})

    class NoSession:
        def __init__(self, target: SshTarget) -> None:
            pass

        def __enter__(self) -> NoSession:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def collect_facts(settings: Settings, scenario: Any, ssh: Any, image: Image,
                      out: Path) -> Facts:
        recorded = RECORDED / settings.release / "facts"
        shutil.copytree(recorded, out)
        facts: dict[str, Any] = json.loads((recorded / "facts.json").read_text())
        if settings.release == "bookworm":  # as if the kernel had no ext4_set_acl
            facts["traceable"]["ext4_set_acl"] = facts["in_kallsyms"]["ext4_set_acl"] = False
            (out / "facts.json").write_text(json.dumps(facts))
        return Facts.parse({**facts, "live_before": facts["live"]})

    def run_scenario(settings: Settings, scenario: Any, backend: Any) -> Outcome:
        ran.append(settings.release)
        bundle = settings.results / scenario.name / "run1"
        bundle.mkdir(parents=True)
        (bundle / "summary.json").write_text(json.dumps({"expectations": [{"ok": True}]}))
        return Outcome("passed", bundle, [], None, 0, {})

    monkeypatch.setattr("lab.matrix.orchestrate.find_image", find_image)
    monkeypatch.setattr("lab.matrix.orchestrate.Session", NoSession)
    monkeypatch.setattr("lab.matrix.orchestrate.collect_facts", collect_facts)
    monkeypatch.setattr("lab.matrix.orchestrate.run_scenario", run_scenario)
    FakeBackend.calls = []
    FakeBackend.broken = {"bullseye"}
    yield ran


@pytest.mark.parametrize("jobs", [1, 3])
def test_run_matrix_orchestration(fake_lab: list[str], tmp_path: Path, jobs: int) -> None:
    settings = Settings(home=tmp_path / "home", results=tmp_path / "results")
    scenario = load_scenario(PORTABLE)
    result = run_matrix(settings, scenario, ["bullseye", "bookworm", "trixie"], jobs=jobs,
                        prefix="mxt", backend_factory=FakeBackend)
    assert result.path.parent == tmp_path / "results" / "matrix"
    assert (tmp_path / "results" / "matrix" / "latest").resolve() == result.path
    assert (result.path / "matrix.md").read_text() == result.markdown
    assert json.loads((result.path / "matrix.json").read_text()) == result.matrix
    statuses = {r["release"]: (r["status"], r["reason"]) for r in result.matrix["releases"]}
    assert statuses["bullseye"] == (
        LAB_ERROR, "qemu exited with status 1 before the guest was ready.")
    assert statuses["bookworm"][0] == NOT_APPLICABLE
    assert statuses["bookworm"][1].startswith("`ext4_set_acl` is absent in 6.1.0-50-cloud-amd64")
    assert statuses["trixie"] == ("passed", None)
    assert fake_lab == ["trixie"]  # the scenario ran only where it applies
    destroyed = sorted(name for call, name in FakeBackend.calls if call == "destroy")
    assert destroyed == ["mxt-bookworm", "mxt-bullseye", "mxt-trixie"]
    assert result.exit_code == 2
    assert result.matrix["jobs"] == jobs


def test_run_matrix_keep_and_bad_arguments(fake_lab: list[str], tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", results=tmp_path / "results")
    scenario = load_scenario(PORTABLE)
    FakeBackend.broken = set()
    result = run_matrix(settings, scenario, ["trixie"], keep=True, prefix="mxt",
                        backend_factory=FakeBackend)
    assert result.exit_code == 0
    assert ("destroy", "mxt-trixie") not in FakeBackend.calls
    with pytest.raises(LabError, match="--jobs must be 1 or more"):
        run_matrix(settings, scenario, ["trixie"], jobs=0, backend_factory=FakeBackend)
    with pytest.raises(LabError, match="Bad lab name prefix 'default'"):
        run_matrix(settings, scenario, ["trixie"], prefix="default",
                   backend_factory=FakeBackend)
    with pytest.raises(LabError, match="Unknown release 'forky'"):
        run_matrix(settings, scenario, ["forky"], backend_factory=FakeBackend)


# --------------------------------------------------------------------------- the CLI

def invoke(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENTRY_LAB_")}
    env["FENTRY_LAB_HOME"] = str(home)
    return subprocess.run([str(Path(sys.executable).parent / "invoke"), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_cli_matrix_words_and_errors(tmp_path: Path) -> None:
    proc = invoke("matrix", "run", "acl-portable", "--releases", "trixie,forky", home=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "fentry-lab: error: Unknown release(s) forky: use a comma-separated list of bullseye, "
        "bookworm, trixie, trixie-backports, sid.")
    proc = invoke("matrix", "walk", "acl-portable", home=tmp_path)
    assert proc.returncode == 1
    assert "No idea what 'acl-portable' is!" in proc.stderr  # `walk` is not a verb
    proc = invoke("matrix.run", "no-such-scenario", home=tmp_path)
    assert proc.returncode == 1
    assert "unknown scenario 'no-such-scenario'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "matrix.run" in invoke("--list", home=tmp_path).stdout
