"""Naming a patched entry's branch target: call on 5.10-6.12, jmp on 7.x."""

from __future__ import annotations

from lab.insn import branch_kind, named_branch

TARGET = {"address": "0xffffffffc0404b00", "symbol": "bpf_trampoline_6442528233"}


def test_call_and_jmp_are_named_old_binutils_too() -> None:
    assert named_branch("call 0xffffffffc0404b00", TARGET) == "call bpf_trampoline_6442528233"
    assert named_branch("jmp 0xffffffffc0404b00", TARGET) == "jmp bpf_trampoline_6442528233"
    assert named_branch("callq 0xffffffffc0404b00", TARGET) == "call bpf_trampoline_6442528233"


def test_other_instructions_and_unnamed_targets_stay() -> None:
    assert named_branch("nopl -0x2a(%rax)", TARGET) == "nopl -0x2a(%rax)"
    assert named_branch("call 0xffffffff81000000", TARGET) == "call 0xffffffff81000000"
    assert named_branch("jmp 0xffffffffc0404b00", {"address": "0xffffffffc0404b00"}) == \
        "jmp 0xffffffffc0404b00"
    assert named_branch("jmp 0xffffffffc0404b00", None) == "jmp 0xffffffffc0404b00"


def test_branch_kind() -> None:
    jmp = [{"text": "nopl -0x2a(%rax)"}, {"text": "jmp 0xffffffffc0404b00"}]
    assert branch_kind(jmp, TARGET) == "jmp"
    assert branch_kind([{"text": "call 0xffffffffc0404b00"}], TARGET) == "call"
    assert branch_kind([], None) == "call"
