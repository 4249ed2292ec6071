"""Tests of the guest helper's pure parts, run on the host (no VM).

The helper is imported the way it runs in the guest: from a directory holding
the modules of lab/guest/ and elf.py side by side (the layout pack_sources uploads).
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from lab import elf as buildid
from lab.run.probes import pack_sources
from tests.helpers import REPO

LAB = REPO / "lab"
BASE = 0xFFFFFFFF81000000

needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None,
                                   reason="needs objdump (binutils) on the host")


def guest_layout(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for module in (LAB / "guest").glob("*.py"):
        shutil.copy(module, directory / module.name)
    shutil.copy(LAB / "elf.py", directory / "elf.py")
    return directory / "fentry_lab_guest.py"


GUEST_MODULES = ("elf", "kallsyms", "later", "live")  # the helper imports them by file name


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    script = guest_layout(tmp_path_factory.mktemp("guest"))
    saved_path = list(sys.path)
    saved = {name: sys.modules.pop(name, None) for name in GUEST_MODULES}
    try:
        sys.path.insert(0, str(script.parent))
        spec = importlib.util.spec_from_file_location("fentry_lab_guest", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path
        for name, old in saved.items():
            sys.modules.pop(name, None)
            if old is not None:
                sys.modules[name] = old


@pytest.fixture(scope="module")
def live(guest: ModuleType) -> ModuleType:
    return sys.modules["live"]  # the helper's own copy of lab/guest/live.py


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(("release", "version"), [
    ("6.12.117+deb13-cloud-amd64", [6, 12, 117]),
    ("6.1.0-28-cloud-amd64", [6, 1, 0]),
    ("5.10.0-32-amd64", [5, 10, 0]),
    ("6.8", [6, 8]),
    ("0.21.2", [0, 21, 2]),  # bpftrace's version goes through the same parser
])
def test_kernel_version(guest: ModuleType, release: str, version: list[int]) -> None:
    assert guest.kernel_version(release) == version


def test_kernel_versions_compare_as_lists(guest: ModuleType) -> None:
    assert guest.kernel_version("6.12.117+deb13-cloud-amd64") >= [6, 3]
    assert guest.kernel_version("5.10.0-32-amd64") < [6, 3]


def test_tool_version(guest: ModuleType) -> None:
    assert guest.tool_version(["fentry-lab-no-such-tool"]) == "missing"
    assert guest.tool_version(["true"]) == "unknown"
    assert guest.tool_version([sys.executable, "-c", "print('tool 1.2\\nmore')"]) == "tool 1.2"


def test_helper_uses_the_uploaded_buildid(guest: ModuleType) -> None:
    blob = struct.pack("<III", 4, 4, 3) + b"GNU\0" + b"\x01\x02\x03\x04"
    assert guest.build_id_from_notes(blob) == "01020304" == buildid.build_id_from_notes(blob)


# --------------------------------------------------------------------------- disassembly


@needs_objdump
def test_disassemble_padding_and_push(live: ModuleType) -> None:
    code = bytes.fromhex("66 0f 1f 00 0f 1f 44 00 00 41 55")
    insns = live.disassemble(code, BASE)
    assert [i["address"] for i in insns] == [hex(BASE), hex(BASE + 4), hex(BASE + 9)]
    assert [i["bytes"] for i in insns] == ["66 0f 1f 00", "0f 1f 44 00 00", "41 55"]
    mnemonics = [str(i["text"]).split()[0] for i in insns]
    assert mnemonics == ["nopw", "nopl", "push"]
    assert insns[2]["text"] == "push %r13"  # whitespace collapsed


@needs_objdump
def test_disassemble_call(live: ModuleType) -> None:
    insns = live.disassemble(bytes.fromhex("e8 10 00 00 00"), BASE)
    assert len(insns) == 1
    (call,) = insns
    assert call["bytes"] == "e8 10 00 00 00"
    assert str(call["text"]).split()[0] == "call"
    assert int(str(call["text"]).split()[1], 16) == BASE + 5 + 0x10


@needs_objdump
def test_disassemble_long_instruction_spans_lines(live: ModuleType) -> None:
    # movabs with a 64-bit immediate: objdump prints its last bytes on a second line.
    code = bytes.fromhex("48 b8 11 22 33 44 55 66 77 88 c3")
    insns = live.disassemble(code, BASE)
    assert [str(i["text"]).split()[0] for i in insns] == ["movabs", "ret"]
    assert insns[0]["bytes"] == "48 b8 11 22 33 44 55 66 77 88"
    assert insns[1]["address"] == hex(BASE + 10)


@needs_objdump
def test_disassemble_at_address_zero(live: ModuleType) -> None:
    insns = live.disassemble(bytes.fromhex("90 c3"), 0)
    assert [(i["address"], i["text"]) for i in insns] == [("0x0", "nop"), ("0x1", "ret")]


# --------------------------------------------------------------------------- tracefs


TRACE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 2/2   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
         setfacl-312     [001] ...11    42.100000: bpf_trace_printk: do_set_acl: dentry=file1

         setfacl-313     [000] ...11    42.200000: bpf_trace_printk: do_set_acl: retval=-1
   \t
"""


def test_read_trace_drops_comments_and_blank_lines(guest: ModuleType, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "trace").write_text(TRACE)
    monkeypatch.setattr(guest, "TRACING", tmp_path)
    lines = guest.read_trace()
    assert len(lines) == 2
    assert lines[0].endswith("do_set_acl: dentry=file1")
    assert lines[1].endswith("do_set_acl: retval=-1")
    assert lines[0].startswith("         setfacl-312")  # kept as written


def test_read_trace_empty_and_not_utf8(guest: ModuleType, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "TRACING", tmp_path)
    (tmp_path / "trace").write_text("# tracer: nop\n#\n")
    assert guest.read_trace() == []
    (tmp_path / "trace").write_bytes(b"x-1 [000] bpf_trace_printk: dentry=\xff\xfe\n")
    (line,) = guest.read_trace()
    assert line == "x-1 [000] bpf_trace_printk: dentry=\ufffd\ufffd"


def test_traceable(guest: ModuleType, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "TRACING", tmp_path)
    (tmp_path / "available_filter_functions").write_text(
        "vfs_read\ndo_set_acl\next4_set_acl [ext4]\ndo_set_acl_extra\n")
    assert guest.traceable(["do_set_acl", "ext4_set_acl", "do_get_acl"]) == {
        "do_set_acl": True, "ext4_set_acl": True, "do_get_acl": False}


# --------------------------------------------------------------------------- probes


def test_build_probes_without_targets(guest: ModuleType) -> None:
    assert guest.build_probes({"targets": []}) == {"ok": True, "log": "", "cached": None}


def test_build_probes_already_built(guest: ModuleType, tmp_path: Path) -> None:
    built = tmp_path / "fentry.bpf.o"
    built.write_bytes(b"")
    result = guest.build_probes({"targets": [str(built)], "out": str(tmp_path),
                                 "src": str(tmp_path)})
    assert result == {"ok": True, "log": "", "cached": True}


# --------------------------------------------------------------------------- as uploaded


def test_packed_helper_runs_as_a_script(tmp_path: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(pack_sources(REPO / "bpf"))) as tar:
        names = tar.getnames()
        assert "guest/fentry_lab_guest.py" in names
        assert "guest/elf.py" in names
        tar.extractall(tmp_path, members=[m for m in tar.getmembers()
                                          if m.name.startswith("guest/")], filter="data")
    proc = subprocess.run([sys.executable, str(tmp_path / "guest" / "fentry_lab_guest.py"),
                           "bogus"], input="{}", capture_output=True, text=True, check=False,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_helper_prints_one_json_document(tmp_path: Path) -> None:
    """`peek` with nothing to peek needs no kernel access: an empty JSON answer."""
    script = guest_layout(tmp_path / "guest")
    proc = subprocess.run([sys.executable, str(script), "peek"], input="",
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"live": {}}
