"""Symbols of the running kernel from /proc/kallsyms, for the guest helper (stdlib only).

The text is read once per helper call and searched with str.find: under TCG one read costs
about 0.35 s, a multi-line regex over its ~8 MB about 0.3 s a pass, a Python loop over its
lines about a second, and str.find a few milliseconds.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 40 ms of the helper's start under TCG; only for annotations
    from typing import Any


def read_kallsyms() -> str:
    """Read once per helper call (about 0.35 s under TCG): each call is one moment of the
    run (prepare, peek while attached, finish), so the symbols cannot change within it."""
    with open("/proc/kallsyms") as f:
        return f.read()


class Symbols:
    """/proc/kallsyms for one helper call: read at most once, when first needed, or in the
    background (prefetch) while the caller does other work; the read is kernel time, so it
    runs beside a thread or an objdump."""

    def __init__(self, text: str | None = None) -> None:
        self._text = text
        self._reading: Any = None  # later.Later, once prefetched

    def prefetch(self) -> Symbols:
        # Imported here: the host imports this module as lab.guest.kallsyms and never
        # prefetches; in the guest, later.py sits beside it.
        from later import Later  # type: ignore[import-not-found]

        if self._text is None and self._reading is None:
            self._reading = Later(read_kallsyms)
        return self

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._reading.result() if self._reading else read_kallsyms()
        return self._text


def _kallsyms_line(text: str, at: int) -> tuple[int, str]:
    """The line of /proc/kallsyms text that holds index `at`: (its start, the line)."""
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    return start, text[start:] if end == -1 else text[start:end]


def symbol_address(text: str, name: str, kinds: str = "tTwW") -> int | None:
    """The address of symbol `name` of one of `kinds` ("" for any type), in the core kernel
    or a module (`name\t[module]`).
"""
    for needle in (f" {name}\n", f" {name}\t"):
        at = text.find(needle)
        while at != -1:
            parts = _kallsyms_line(text, at)[1].split()
            if len(parts) >= 3 and parts[2] == name and (not kinds or parts[1] in kinds):
                return int(parts[0], 16)
            at = text.find(needle, at + 1)
    return None


def symbol_at(text: str, address: int) -> str | None:
    """The name of the first symbol at exactly `address`, if any."""
    needle = f"{address:016x} "
    at = text.find(needle)
    while at != -1:
        if at == 0 or text[at - 1] == "\n":
            parts = _kallsyms_line(text, at)[1].split()
            if len(parts) >= 3:
                return parts[2]
        at = text.find(needle, at + 1)
    return None


def kallsyms_lookup(names: list[str], text: str | None = None) -> dict[str, int]:
    """Text symbols by name."""
    text = read_kallsyms() if text is None else text
    found: dict[str, int] = {}
    for name in names:
        address = symbol_address(text, name)
        if address is not None:
            found[name] = address
    return found


def symbolize(addresses: list[int], text: str) -> dict[int, str]:
    """The kallsyms symbol at each address (a BPF trampoline has its own), else the nearest
    one below it, as name+0xoff."""
    named: dict[int, str] = {}
    for target in addresses:
        name = symbol_at(text, target)
        if name:
            named[target] = name
    rest = [a for a in addresses if a not in named]
    if rest:
        named.update(_nearest_symbols(rest))
    return named


def _nearest_symbols(addresses: list[int]) -> dict[int, str]:
    best: dict[int, tuple[int, str]] = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            addr = int(parts[0], 16)
            for target in addresses:
                if addr <= target and (target not in best or addr > best[target][0]):
                    best[target] = (addr, parts[2])
    named = {}
    for target, (addr, name) in best.items():
        if target - addr < 1 << 20:
            named[target] = name if addr == target else f"{name}+{target - addr:#x}"
    return named


def return_thunk(ksyms: str) -> int | None:
    return symbol_address(ksyms, "__x86_return_thunk", kinds="")


def function_end(address: int, text: str) -> int:
    """The next kallsyms address above `address` (core kallsyms is in address order)."""
    needle = f"{address:016x} "
    at = text.find(needle)
    while at != -1 and at != 0 and text[at - 1] != "\n":
        at = text.find(needle, at + 1)
    while at != -1:
        at = text.find("\n", at) + 1
        if at == 0 or at >= len(text):
            break
        if not text.startswith(needle, at):
            return int(text[at:at + 16], 16)
    raise LookupError(f"no symbol after {address:#x} in /proc/kallsyms")
