"""The guest helper's report data (trampoline names, function ends), on the host."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from lab.guest import kallsyms
from tests.unit.guest.test_guest_helper import guest_layout

KSYMS = """\
ffffffff810c4f30 T __bpf_tramp_enter
ffffffff810c45e0 T __bpf_prog_enter_recur
ffffffff81a00000 T __x86_return_thunk
ffffffff814d3a20 T do_set_acl
ffffffff814d3a20 t do_set_acl_alias
ffffffff814d3ad0 T set_posix_acl
ffffffffc030124c t bpf_prog_2db8534f0e96db99_handle_do_set_acl\t[bpf]
"""


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[ModuleType]:
    script = guest_layout(tmp_path / "guest")
    saved_path, saved_elf = list(sys.path), sys.modules.pop("elf", None)
    try:
        sys.path.insert(0, str(script.parent))
        spec = importlib.util.spec_from_file_location("fentry_lab_guest_report", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("elf", None)
        if saved_elf is not None:
            sys.modules["elf"] = saved_elf


def test_function_end_is_the_next_symbol_above() -> None:
    assert kallsyms.function_end(0xFFFFFFFF814D3A20, KSYMS) == 0xFFFFFFFF814D3AD0
    assert kallsyms.return_thunk(KSYMS) == 0xFFFFFFFF81A00000


def test_trampoline_targets_are_named(guest: ModuleType) -> None:
    names = guest._name_targets([0xFFFFFFFF810C45E0, 0xFFFFFFFFC030124C, 0xFFFFFFFF814D3A29],
                                {"do_set_acl": 0xFFFFFFFF814D3A20}, KSYMS)
    assert names == {0xFFFFFFFF810C45E0: "__bpf_prog_enter_recur",
                     0xFFFFFFFFC030124C: "bpf_prog_2db8534f0e96db99_handle_do_set_acl",
                     0xFFFFFFFF814D3A29: "do_set_acl+0x9"}


def test_call_targets_decode_rel32(guest: ModuleType) -> None:
    insns = [{"address": "0xffffffffc0302a0c", "bytes": "e8 18 10 fd f0", "text": "call x"}]
    assert guest._call_targets(insns) == {0xFFFFFFFFC0302A0C: 0xFFFFFFFFB12D3A29}


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
