"""The guest helper's report data (trampoline names, function ends), on the host."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from lab.guest import kallsyms
from lab.run.guest import known_functions
from tests.unit.guest.test_guest_helper import guest_layout, needs_objdump

KSYMS = """\
ffffffff810c4f30 T __bpf_tramp_enter
ffffffff810c45e0 T __bpf_prog_enter_recur
ffffffff81a00000 T __x86_return_thunk
ffffffff814d3a20 T do_set_acl
ffffffff814d3a20 t do_set_acl_alias
ffffffff814d3ad0 T set_posix_acl
ffffffffc030124c t bpf_prog_2db8534f0e96db99_handle_do_set_acl\t[bpf]
"""


GUEST_MODULES = ("elf", "kallsyms", "later", "live")


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[ModuleType]:
    """The helper as the guest runs it; its modules import each other by their file names."""
    script = guest_layout(tmp_path / "guest")
    saved_path = list(sys.path)
    saved = {name: sys.modules.pop(name, None) for name in GUEST_MODULES}
    try:
        sys.path.insert(0, str(script.parent))
        spec = importlib.util.spec_from_file_location("fentry_lab_guest_report", script)
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


@pytest.fixture
def live(guest: ModuleType) -> ModuleType:
    return sys.modules["live"]  # the helper's own copy of lab/guest/live.py


def test_function_end_is_the_next_symbol_above() -> None:
    assert kallsyms.function_end(0xFFFFFFFF814D3A20, KSYMS) == 0xFFFFFFFF814D3AD0
    assert kallsyms.return_thunk(KSYMS) == 0xFFFFFFFF81A00000


def test_trampoline_targets_are_named(live: ModuleType) -> None:
    names = live._name_targets([0xFFFFFFFF810C45E0, 0xFFFFFFFFC030124C, 0xFFFFFFFF814D3A29],
                                {"do_set_acl": 0xFFFFFFFF814D3A20}, KSYMS)
    assert names == {0xFFFFFFFF810C45E0: "__bpf_prog_enter_recur",
                     0xFFFFFFFFC030124C: "bpf_prog_2db8534f0e96db99_handle_do_set_acl",
                     0xFFFFFFFF814D3A29: "do_set_acl+0x9"}


def test_call_targets_decode_rel32(live: ModuleType) -> None:
    insns = [{"address": "0xffffffffc0302a0c", "bytes": "e8 18 10 fd f0", "text": "call x"}]
    assert live._call_targets(insns) == {0xFFFFFFFFC0302A0C: 0xFFFFFFFFB12D3A29}


def test_symbol_lookups_match_whole_lines_only() -> None:
    text = KSYMS + "ffffffff81000010 T xdo_set_acl\nffffffff81000020 d data_sym\n"
    assert kallsyms.symbol_address(text, "do_set_acl") == 0xFFFFFFFF814D3A20
    assert kallsyms.symbol_address(text, "bpf_prog_2db8534f0e96db99_handle_do_set_acl") == \
        0xFFFFFFFFC030124C  # a module symbol: `name\t[bpf]`
    assert kallsyms.symbol_address(text, "set_acl") is None  # only a suffix of other names
    assert kallsyms.symbol_address(text, "data_sym") is None  # not text
    assert kallsyms.symbol_address(text, "data_sym", kinds="") == 0xFFFFFFFF81000020
    assert kallsyms.symbol_at(text, 0xFFFFFFFF814D3A20) == "do_set_acl"
    assert kallsyms.symbol_at(text, 0xFFFFFFFF814D3A21) is None
    assert kallsyms.kallsyms_lookup(["do_set_acl", "nope"], text) == \
        {"do_set_acl": 0xFFFFFFFF814D3A20}


# -- peeks that spare a read of /proc/kallsyms ------------------------------------------

DO_SET_ACL = 0xFFFFFFFF814D3A20
ENTRY = bytes.fromhex("66 0f 1f 00 0f 1f 44 00 00 41 55 41 54 55 53 48")
# ... mov %rdi,%rbx at 0xf; at 0x12 `jmp __x86_return_thunk`, the function's return
BODY = ENTRY + bytes.fromhex("89 fb e9") + (0xFFFFFFFF81A00000 - (DO_SET_ACL + 0x17)).to_bytes(
    4, "little", signed=True) + bytes(0xB0 - 0x17)


def _fake_kcore(live: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_kcore(address: int, size: int) -> bytes:
        assert address == DO_SET_ACL
        return BODY[:size]
    monkeypatch.setattr(live, "read_kcore", read_kcore)


class CountingSymbols:
    """guest.Symbols' interface, counting the reads of the text."""

    def __init__(self, text: str) -> None:
        self._text, self.reads = text, 0

    @property
    def text(self) -> str:
        self.reads += 1
        return self._text


@needs_objdump
def test_a_first_peek_finds_what_later_peeks_are_told(live: ModuleType,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_kcore(live, monkeypatch)
    symbols = CountingSymbols(KSYMS)
    first = live.peek(["do_set_acl"], symbols)["do_set_acl"]
    assert symbols.reads > 0
    assert first["end"] == hex(0xFFFFFFFF814D3AD0) and first["thunk"] == hex(0xFFFFFFFF81A00000)
    assert [r["offset"] for r in first["returns"]] == ["0x12"]  # jmp __x86_return_thunk
    known = known_functions({"do_set_acl": first, "gone": {"error": "not in /proc/kallsyms"}})
    assert known == {"do_set_acl": {"address": hex(DO_SET_ACL), "end": first["end"],
                                    "thunk": first["thunk"]}}

    # After detaching: nothing calls out of the entry, so kallsyms is never read.
    later = CountingSymbols(KSYMS)
    again = live.peek(["do_set_acl"], later, known)["do_set_acl"]
    assert later.reads == 0
    assert again == first


@needs_objdump
def test_a_patched_entry_is_named_from_kallsyms_even_when_known(
        live: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    call = bytes.fromhex("e8") + (0xFFFFFFFF810C45E0 - (DO_SET_ACL + 9)).to_bytes(
        4, "little", signed=True)
    patched = ENTRY[:4] + call + ENTRY[9:]
    monkeypatch.setattr(live, "read_kcore", lambda address, size: (patched + BODY[16:])[:size])
    known = {"do_set_acl": {"address": hex(DO_SET_ACL), "end": hex(0xFFFFFFFF814D3AD0),
                            "thunk": None}}
    symbols = CountingSymbols(KSYMS)
    entry = live.peek(["do_set_acl"], symbols, known)["do_set_acl"]
    assert symbols.reads > 0
    assert entry["call_target"]["symbol"] == "__bpf_prog_enter_recur"
    assert entry["thunk"] is None and entry["returns"] == []  # no thunk known: no `jmp` return


def test_symbols_are_read_once_and_prefetch_in_the_background(
        guest: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    kallsyms_module = sys.modules["kallsyms"]
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        return KSYMS
    monkeypatch.setattr(kallsyms_module, "read_kallsyms", read)
    lazy = guest.Symbols()
    assert reads == []
    assert lazy.text == KSYMS and lazy.text == KSYMS
    assert len(reads) == 1
    early = guest.Symbols().prefetch()
    assert early.text == KSYMS and len(reads) == 2

    def broken() -> str:
        raise PermissionError("no /proc/kallsyms")
    monkeypatch.setattr(kallsyms_module, "read_kallsyms", broken)
    with pytest.raises(PermissionError):
        _ = guest.Symbols().prefetch().text


def test_later_returns_or_raises_what_the_call_did(guest: ModuleType) -> None:
    assert guest.Later(lambda a, b: a + b, 2, 3).result() == 5
    assert guest.Later(sorted, [3, 1], heavy=True).result() == [1, 3]
    with pytest.raises(ZeroDivisionError):
        guest.Later(lambda: 1 // 0).result()
