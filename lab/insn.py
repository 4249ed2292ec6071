"""x86 instruction text as the guest helper reads it: one rule for naming a patched
entry's branch target, shared by the report, its terminal version and the matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BRANCHES = ("call", "jmp")  # 6.x kernels patch in a call, 7.x a jmp (e8 / e9 rel32)


def _branch(text: str) -> tuple[str, str]:
    """(call|jmp|"", operand); old binutils (bullseye) write callq/jmpq."""
    mnemonic, _, operand = text.partition(" ")
    mnemonic = mnemonic.removesuffix("q")
    return (mnemonic if mnemonic in BRANCHES else "", operand.strip())


def named_branch(text: str, target: Mapping[str, Any] | None) -> str:
    """``call 0xffffffffc0…`` -> ``call bpf_trampoline_N`` when the helper named that
    address (its ``call_target``); any other instruction is returned as it is."""
    if not isinstance(target, Mapping) or not target.get("symbol"):
        return text
    mnemonic, operand = _branch(text)
    if mnemonic and operand == target.get("address"):
        return f"{mnemonic} {target['symbol']}"
    return text


def branch_kind(insns: Sequence[Mapping[str, Any]], target: Mapping[str, Any] | None) -> str:
    """"jmp" or "call": how the patched entry reaches the named target."""
    for insn in insns:
        mnemonic, operand = _branch(str(insn.get("text", "")))
        if mnemonic and target and operand == target.get("address"):
            return mnemonic
    return "call"
