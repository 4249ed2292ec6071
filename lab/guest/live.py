"""The live code of kernel functions, for the guest helper (stdlib only, Python 3.9+).

Per function: its entry bytes from /proc/kcore, disassembled; the call a patched entry
makes (a BPF trampoline: read and disassembled too, its calls named from kallsyms); and
its live return instructions (`ret`, or `jmp __x86_return_thunk`).
"""

from __future__ import annotations

import os
import re
import struct
import subprocess

from kallsyms import (  # type: ignore[import-not-found]
    Symbols,
    function_end,
    kallsyms_lookup,
    return_thunk,
    symbol_at,
    symbolize,
)
from later import Later  # type: ignore[import-not-found]

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 40 ms of the helper's start under TCG; only for annotations
    from typing import Any

PEEK_BYTES = 16


def read_kcore(address: int, size: int) -> bytes:
    with open("/proc/kcore", "rb") as f:
        header = f.read(64)
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            ptype, _fl, offset, vaddr, _pa, filesz = struct.unpack_from("<IIQQQQ", table,
                                                                        i * phentsize)
            if ptype == 1 and vaddr <= address < vaddr + filesz:
                f.seek(offset + address - vaddr)
                return f.read(size)
    raise LookupError(f"address {address:#x} is in no /proc/kcore segment")


def disassemble(code: bytes, address: int) -> list[dict[str, object]]:
    # The bytes go to objdump in an anonymous memory file: no temporary file on the guest's
    # disk (a full disk cannot stop it, and no file of ours shows up in a user's traces).
    fd = os.memfd_create("fentry-lab-code")
    try:
        os.write(fd, code)
        out = subprocess.run(
            ["objdump", "-D", "-b", "binary", "-m", "i386:x86-64",
             f"--adjust-vma={address:#x}", f"/proc/self/fd/{fd}"],
            capture_output=True, text=True, check=True, pass_fds=(fd,)).stdout
    finally:
        os.close(fd)
    insns: list[dict[str, object]] = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)", line)
        if m:
            insns.append({"address": f"{int(m.group(1), 16):#x}", "bytes": m.group(2).strip(),
                          "text": re.sub(r"\s+", " ", m.group(3)).strip()})
        elif insns and re.match(r"\s*[0-9a-f]+:\t[0-9a-f ]+$", line):
            extra = line.split("\t")[1].strip()  # continuation of a long instruction
            insns[-1]["bytes"] = f"{insns[-1]['bytes']} {extra}"
    return insns


def peek(functions: list[str], symbols: Symbols,
         known: dict[str, Any] | None = None) -> dict[str, object]:
    """The live entry bytes of each function, the call its entry makes (a BPF trampoline,
    read and disassembled too) and its live return instructions.

    `known` carries what an earlier peek of this run found per function (address, end,
    return thunk): functions do not move, so kallsyms is then read only to name a call.
    """
    known = known or {}
    hints = {fn: known[fn] for fn in functions if isinstance(known.get(fn), dict)
             and "address" in known[fn] and "end" in known[fn] and "thunk" in known[fn]}
    unknown = [fn for fn in functions if fn not in hints]
    found = kallsyms_lookup(unknown, symbols.text) if unknown else {}
    addresses = {fn: int(hints[fn]["address"], 16) if fn in hints else found[fn]
                 for fn in functions if fn in hints or fn in found}
    result: dict[str, object] = {}
    calls: dict[str, int] = {}
    # The returns are read beside the entries.
    returns = {fn: Later(_guarded, _returns_of, addr, hints.get(fn), symbols)
               for fn, addr in addresses.items()}
    for fn in functions:
        if fn not in addresses:
            result[fn] = {"error": "not in /proc/kallsyms"}
            continue
        addr = addresses[fn]
        code = read_kcore(addr, PEEK_BYTES)
        insns = disassemble(code, addr)
        result[fn] = {"address": f"{addr:#x}", "bytes": code.hex(" "),
                      "instructions": insns}
        # A 5-byte call or jmp (e8/e9 rel32; 7.x kernels patch a jmp): name its target.
        targets = _call_targets(insns)
        if targets:
            calls[fn] = list(targets.values())[-1]
    if calls:
        names = symbolize(list(calls.values()), symbols.text)
        for fn, target in calls.items():
            entry = result[fn]
            assert isinstance(entry, dict)
            entry["call_target"] = {"address": f"{target:#x}", "symbol": names.get(target)}
            if str(names.get(target, "")).startswith("bpf_trampoline_"):
                entry["trampoline"] = _guarded(read_trampoline, target, addresses,
                                               symbols.text)
    for fn, later in returns.items():
        entry = result[fn]
        assert isinstance(entry, dict)
        reply = later.result()
        if isinstance(reply, dict):  # _guarded's {"error": ...}
            entry["returns"] = reply
            continue
        entry["returns"], end, thunk = reply
        entry["end"] = f"{end:#x}"
        entry["thunk"] = f"{thunk:#x}" if thunk is not None else None
    return result


def _returns_of(address: int, hint: dict[str, Any] | None,
                symbols: Symbols) -> tuple[list[dict[str, object]], int, int | None]:
    """(return instructions, function end, return thunk), the last two from the hint."""
    if hint is not None:
        end = int(hint["end"], 16)
        thunk = int(hint["thunk"], 16) if hint["thunk"] else None
    else:
        end, thunk = function_end(address, symbols.text), return_thunk(symbols.text)
    return return_instructions(address, end, thunk), end, thunk


# --- report data: the trampoline a patched entry calls, and a function's returns -------

TRAMPOLINE_BYTES = 768  # an fentry+fexit trampoline is a few hundred bytes


def _guarded(func: Any, *args: Any) -> Any:
    """Extra report data must never fail a run: an error becomes {"error": ...}."""
    try:
        return func(*args)
    except (OSError, LookupError, ValueError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _call_targets(insns: list[dict[str, object]]) -> dict[int, int]:
    """Instruction address -> target of each direct call/jmp (e8/e9 rel32)."""
    targets: dict[int, int] = {}
    for insn in insns:
        raw = bytes.fromhex(str(insn["bytes"]).replace(" ", ""))
        if len(raw) == 5 and raw[0] in (0xE8, 0xE9):
            at = int(str(insn["address"]), 16)
            targets[at] = at + 5 + struct.unpack("<i", raw[1:])[0]
    return targets


def _name_targets(targets: list[int], functions: dict[str, int], text: str) -> dict[int, str]:
    """Exact kallsyms names; a target inside a peeked function is that function+off
    (the trampoline calls the original body past the patched entry)."""
    named: dict[int, str] = {}
    for target in targets:
        name = symbol_at(text, target)
        if name:
            named[target] = name
            continue
        for fn, start in functions.items():
            if 0 < target - start < 4096:
                named[target] = f"{fn}+{target - start:#x}"
    return named


def read_trampoline(address: int, functions: dict[str, int], ksyms: str) -> dict[str, object]:
    code = read_kcore(address, TRAMPOLINE_BYTES)
    insns = disassemble(code, address)
    for i, insn in enumerate(insns):  # the trampoline ends at its first return
        text = str(insn["text"])
        if text.startswith("ret") or text.startswith("int3"):
            insns = insns[:i + 1]
            break
    targets = _call_targets(insns)
    names = _name_targets(sorted(set(targets.values())), functions, ksyms)
    thunk = return_thunk(ksyms)
    for insn in insns:
        target = targets.get(int(str(insn["address"]), 16))
        if target is not None:
            insn["target"] = f"{target:#x}"
            insn["symbol"] = names.get(target) or (
                "__x86_return_thunk" if target == thunk else None)
    used = sum(len(str(i["bytes"]).split()) for i in insns)
    return {"address": f"{address:#x}", "bytes": code[:used].hex(" "), "instructions": insns}


def return_instructions(address: int, end: int,
                        thunk: int | None) -> list[dict[str, object]]:
    """The function's live return instructions: `ret`, or `jmp __x86_return_thunk`."""
    size = min(max(end - address, 16), 8192)
    insns = disassemble(read_kcore(address, size), address)
    targets = _call_targets(insns)
    found = []
    for insn in insns:
        at = int(str(insn["address"]), 16)
        text = str(insn["text"])
        if text.startswith("ret") or (text.startswith("jmp") and thunk is not None
                                      and targets.get(at) == thunk):
            found.append({**insn, "offset": f"{at - address:#x}"})
    return found
