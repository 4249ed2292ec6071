"""Text the guest recorded -> structure: `objdump -d` listings, live reads, `bpftrace -lv`.

The one host-side parser of these texts; the table (table.py) and the markdown use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lab.insn import named_branch

ENTRY_BYTES = 16  # the live bytes the guest reads; the static entry is cut to match


def bpftrace_kind(version_text: str | None) -> str | None:
    """``bpftrace v0.17.0`` -> ``kfunc`` (fentry: is the name from 0.20 on)."""
    if not version_text:
        return None
    found = re.search(r"v?(\d+)\.(\d+)", version_text)
    if not found:
        return None
    return "fentry" if (int(found.group(1)), int(found.group(2))) >= (0, 20) else "kfunc"


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*(?:\t(.*))?$")


def parse_objdump(text: str) -> list[dict[str, str]]:
    """``objdump -d`` lines -> [{address, bytes, text}], continuation bytes joined."""
    insns: list[dict[str, str]] = []
    for line in text.splitlines():
        match = _OBJDUMP_LINE.match(line)
        if not match:
            continue
        address, raw, asm = match.groups()
        if asm is None:
            if insns:
                insns[-1]["bytes"] += " " + raw.strip()
            continue
        insns.append({"address": address, "bytes": raw.strip(), "text": tidy_asm(asm)})
    return insns


def tidy_asm(text: str) -> str:
    """``call   ffffffff8108c4b0 <__fentry__>`` -> ``call __fentry__``; spaces squeezed."""
    text = re.sub(r"\s+#.*$", "", text)
    text = re.sub(r"\b(?:0x)?[0-9a-f]{8,16} <([^>]+)>", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def entry_prefix(insns: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The instructions up to the ``call __fentry__`` (endbr64 first under IBT), else two."""
    total = 0
    for index, insn in enumerate(insns):
        total += len(insn["bytes"].split())
        if total > ENTRY_BYTES:
            break
        if insn["text"].startswith("call") and "__fentry__" in insn["text"]:
            return list(insns[:index + 1])
    return list(insns[:2])


def insns_json(insns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"bytes": " ".join(str(i["bytes"]) for i in insns),
            "text": "; ".join(_squeeze([str(i["text"]) for i in insns]))}


def _squeeze(texts: Sequence[str]) -> list[str]:
    """Runs of one instruction become ``nop x9``."""
    out: list[str] = []
    count = 0
    for index, text in enumerate(texts):
        count += 1
        if index + 1 < len(texts) and texts[index + 1] == text:
            continue
        out.append(f"{text} x{count}" if count > 1 else text)
        count = 0
    return out


def live_json(peek: Mapping[str, Any] | None, span: int) -> dict[str, Any] | None:
    """The first ``span`` bytes of a live read (the static entry's length), named."""
    if not peek or "bytes" not in peek:
        return None
    span = span or ENTRY_BYTES
    target = peek.get("call_target") or {}
    insns, used = [], 0
    for insn in peek.get("instructions", []):
        if used >= span:
            break
        text = named_branch(str(insn["text"]), target)
        insns.append({"bytes": insn["bytes"], "text": text})
        used += len(str(insn["bytes"]).split())
    result = insns_json(insns)
    result["address"] = peek.get("address")
    return result


def signature_from_bpftrace(fn: str, text: str) -> str | None:
    """``bpftrace -lv`` output -> ``int fn(struct inode *inode, ...)``; None if absent.

    bpftrace 0.11 prints ``kfunc:fn`` and ``type name;`` lines, 0.17 ``kfunc:vmlinux:fn``,
    0.20 and later ``fentry:vmlinux:fn``; the last pseudo-argument ``retval`` gives the
    return type (none: void).
    """
    params: list[tuple[str, str]] = []
    seen = False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if re.fullmatch(rf"(?:kfunc|fentry|fexit|kretfunc)(?::\w+)?:{re.escape(fn)}",
                        line.strip()):
            if seen:
                break
            seen = True
            continue
        if seen and line[:1] in (" ", "\t"):
            decl = line.strip().rstrip(";").strip()
            kind, _, name = decl.rpartition(" ")
            params.append((kind.strip(), name))
        elif seen:
            break
    if not seen:
        return None
    returns = "void"
    if params and params[-1][1] == "retval":
        returns = params.pop()[0]
    args = ", ".join(kind + ("" if kind.endswith("*") else " ") + name for kind, name in params)
    return f"{returns} {fn}({args or 'void'})"
