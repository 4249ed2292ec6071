"""One verdict of a run: what was expected, what was seen, and whether they agree."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Check:
    kind: str  # "step", "event" or "trace"
    name: str
    expected: str
    seen: str
    ok: bool

    def describe(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        return f"[{mark}] {self.name}: expected {self.expected}; saw {self.seen}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
