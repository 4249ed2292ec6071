"""The tutorial's before/after pictures as data: entry bytes per row, trampoline, returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lab.insn import branch_kind

ENDBR64 = "f3 0f 1e fa"
OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*(?:\t(.*))?$")


def parse_objdump(text: str) -> list[dict[str, Any]]:
    """`objdump -d` lines as instructions (continuation lines joined to the one before)."""
    insns: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = OBJDUMP_LINE.match(line)
        if not m:
            continue
        if m.group(3):
            insns.append({"address": f"{int(m.group(1), 16):#x}", "bytes": m.group(2).strip(),
                          "text": re.sub(r"\s+", " ", m.group(3)).strip()})
        elif insns:
            insns[-1]["bytes"] += " " + m.group(2).strip()
    return insns


def _size(insn: Mapping[str, Any]) -> int:
    return len(str(insn.get("bytes", "")).split())


def _cells(insns: list[dict[str, Any]], limit: int, patch: tuple[int, int] | None,
           reference: list[str], tramp: bool = False) -> list[dict[str, Any]]:
    """Instruction groups of one row, up to `limit` bytes, each byte marked when it is in
    the patch site or differs from the static bytes."""
    cells = []
    offset = 0
    for insn in insns:
        if offset >= limit:
            break
        raw = str(insn.get("bytes", "")).split()
        text = str(insn.get("text", ""))
        in_patch = patch is not None and patch[0] <= offset < patch[1]
        kind = ""
        if text.startswith("endbr"):
            kind = "endbr"
        elif text.startswith("nop"):
            kind = "nop"
        elif text.startswith(("call", "jmp")) and tramp and in_patch:
            kind = "tramp"  # the patched branch into the trampoline (call; jmp on 7.x)
        elif text.startswith("call"):
            kind = "call"
        byte_cells = [{"hex": b, "changed": offset + i < len(reference)
                       and reference[offset + i] != b} for i, b in enumerate(raw)]
        cells.append({"address": insn.get("address", ""), "bytes": byte_cells, "text": text,
                      "kind": kind, "patched": in_patch, "offset": offset})
        offset += len(raw)
    return cells


def entry_picture(fn: str, live: Mapping[str, Any], objdump: str | None,
                  kernel: Mapping[str, Any]) -> dict[str, Any]:
    """The four rows (static, before, attached, after) of one function's entry."""
    static = parse_objdump(objdump or "")
    readings = {k: v for k, v in live.items() if isinstance(v, dict)}
    limit = max([len(str(r.get("bytes", "")).split()) for r in readings.values()] or [16])
    patch: tuple[int, int] | None = None
    offset = 0
    for insn in static:
        if "__fentry__" in str(insn.get("text", "")):
            patch = (offset, offset + _size(insn))
            break
        offset += _size(insn)
    if patch is None and static and str(static[0].get("text", "")).startswith("endbr"):
        patch = (4, 9)
    elif patch is None:
        patch = (0, 5) if not static else None
    reference = [b for insn in static for b in str(insn["bytes"]).split()][:limit]
    rows = [{"name": "static", "label": "static (debug vmlinux)", "present": bool(static),
             "address": static[0]["address"] if static else None,
             "cells": _cells(static, limit, patch, reference), "error": None,
             "missing": f"objdump-{fn}.txt" if not static else None}]
    for phase, label in (("before", "live before"), ("attached", "attached"),
                         ("after", "after detach")):
        reading = readings.get(phase)
        error = reading.get("error") if reading else None
        insns = list(reading.get("instructions") or []) if reading else []
        rows.append({"name": phase, "label": label, "present": bool(insns),
                     "address": reading.get("address") if reading else None,
                     "cells": _cells(insns, limit, patch, reference, phase == "attached"),
                     "error": error,
                     "missing": None if reading else f"live-text.json: no '{phase}' reading"})
    attached = readings.get("attached") or {}
    target = attached.get("call_target") if isinstance(attached.get("call_target"), dict) else None
    return {"function": fn, "rows": rows, "patch": patch, "target": target,
            "captions": captions(fn, rows, static, readings, target, kernel),
            "trampoline": trampoline(fn, attached.get("trampoline"),
                                     str((target or {}).get("symbol") or "the trampoline"),
                                     branch_kind(list(attached.get("instructions") or []),
                                                 target)),
            "returns": returns(readings)}


def captions(fn: str, rows: list[dict[str, Any]], static: list[dict[str, Any]],
             readings: Mapping[str, Any], target: Mapping[str, Any] | None,
             kernel: Mapping[str, Any]) -> list[dict[str, str]]:
    """What the rows show, said from the bytes (each caption has a title and a text)."""
    out = []
    before = next((r for r in rows if r["name"] == "before"), None)
    static_texts = [c["text"] for c in rows[0]["cells"]]
    before_texts = [c["text"] for c in before["cells"]] if before else []
    if any("__fentry__" in t for t in static_texts) and before_texts:
        fentry_at = next(i for i, t in enumerate(static_texts) if "__fentry__" in t)
        live_text = before_texts[fentry_at] if fentry_at < len(before_texts) else "?"
        out.append({"title": "Rewritten at boot",
                    "text": f"The compiler put `call __fentry__` in {fn}'s entry; the live "
                            f"kernel holds `{live_text}` there: ftrace turned the call into a "
                            "5-byte NOP at boot, so an unprobed function pays nothing."})
    ibt = (kernel.get("config") or {}).get("CONFIG_X86_KERNEL_IBT")
    if static_texts and static_texts[0].startswith("endbr") and before_texts:
        if before_texts[0].startswith("endbr"):
            out.append({"title": "IBT active",
                        "text": "endbr64 is still there live: indirect-branch tracking is "
                                "enforced on this CPU."})
        else:
            out.append({"title": "IBT configured, not active",
                        "text": f"The static endbr64 is `{before_texts[0]}` live: the kernel "
                                f"is built with IBT (CONFIG_X86_KERNEL_IBT={ibt or '?'}) but "
                                "the CPU does not enforce it, so boot replaced the marker "
                                "with a 4-byte NOP. A config flag alone does not say IBT is on."})
    static_addr = rows[0].get("address")
    live_addr = before.get("address") if before else None
    if static_addr and live_addr:
        slide = int(str(live_addr), 16) - int(str(static_addr), 16)
        out.append({"title": f"KASLR slide {slide:#x}",
                    "text": f"Static address {static_addr} (debug vmlinux), live {live_addr}: "
                            "the kernel was loaded at a random offset."})
    attached_insns = list((readings.get("attached") or {}).get("instructions") or [])
    if target and branch_kind(attached_insns, target) == "jmp":
        out.append({"title": f"Attached: jmp {target.get('symbol') or target.get('address')}",
                    "text": "Attaching wrote a 5-byte `jmp` (e9 rel32) over the NOP, into the "
                            "BPF trampoline built for this function. Newer kernels (7.x "
                            "here) jump rather than call: no return address into the "
                            "function is pushed, the trampoline calls the body itself and "
                            "returns straight to the caller (6.12 calls, and its trampoline "
                            "drops that extra address at the end)."})
    elif target:
        out.append({"title": f"Attached: call {target.get('symbol') or target.get('address')}",
                    "text": "Attaching wrote a 5-byte `call` (e8 rel32) over the NOP, into "
                            "the BPF trampoline built for this function: a call, not a jump, "
                            "so the trampoline can return into the function body."})
    after = readings.get("after") or {}
    before_r = readings.get("before") or {}
    if after.get("bytes") and after.get("bytes") == before_r.get("bytes"):
        out.append({"title": "Restored", "text": "After detaching, the entry holds the same "
                    "NOP as before: the patch is undone."})
    return out


def _role(symbol: str, fn: str) -> str:
    if symbol.startswith(("__bpf_prog_enter", "__bpf_tramp_enter")):
        return "enter"
    if symbol.startswith(("__bpf_prog_exit", "__bpf_tramp_exit")):
        return "exit"
    if symbol.startswith("bpf_prog_"):
        return "prog"
    if symbol.startswith(f"{fn}+"):
        return "body"
    return "other"


def trampoline(fn: str, data: Any, name: str = "the trampoline",
               entry: str = "call") -> dict[str, Any] | None:
    """The trampoline's instructions (calls named) and the path they make."""
    if not isinstance(data, dict):
        return None
    if data.get("error"):
        return {"error": data["error"], "instructions": [], "path": [], "address": None}
    insns = []
    path = [{"label": "caller", "role": "caller"},
            {"label": f"{fn} entry: {entry} {name}", "role": "entry"},
            {"label": f"{name}: saves the arguments, __bpf_prog_enter", "role": "tramp"}]
    seen_body = False
    for insn in data.get("instructions") or []:
        symbol = str(insn.get("symbol") or "")
        role = _role(symbol, fn) if symbol else ""
        insns.append({**insn, "role": role})
        if str(insn.get("text", "")).startswith("call") and symbol:
            if role == "prog":
                kind = "fexit program" if seen_body else "fentry program"
                path.append({"label": f"{kind}: {symbol}", "role": "prog"})
            elif role == "body":
                seen_body = True
                path.append({"label": f"{fn} body ({symbol})", "role": "body"})
    if not seen_body:
        path.append({"label": f"{fn} body (trampoline returns into it)", "role": "body"})
    path.append({"label": "return to caller", "role": "caller"})
    return {"address": data.get("address"), "instructions": insns, "path": path,
            "error": None}


def returns(readings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The function's return instructions live before and while attached."""
    before = (readings.get("before") or {}).get("returns")
    attached = (readings.get("attached") or {}).get("returns")
    if not isinstance(before, list) and not isinstance(attached, list):
        return None
    before = before if isinstance(before, list) else []
    attached = attached if isinstance(attached, list) else []
    key = [(r.get("address"), r.get("bytes")) for r in before]
    return {"before": before, "attached": attached,
            "untouched": bool(before) and key == [(r.get("address"), r.get("bytes"))
                                                  for r in attached]}
