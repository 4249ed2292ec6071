"""Figures from the guest's raw samples: calls/s, ns added per call, ratio to kprobe.

The guest (bpf/bench/bench.c) prints one JSON line per mode: its samples (calls made and
nanoseconds taken) and the hits each attached program counted. Everything here is pure,
so it is tested on recorded JSON without a lab.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MODES = ("base", "fentry", "fexit", "fentry+fexit", "kprobe", "kretprobe", "kprobe-multi",
         "raw-tp")

# The figures the tutorial's claim rests on; ns added per call, or calls/s in millions.
REFERENCES: tuple[dict[str, Any], ...] = (
    {"source": "Starovoitov 2019 (fentry patch set, __set_task_comm)",
     "function": "__set_task_comm",
     "added_ns": {"fentry": 4.0, "fexit": 8.0, "kprobe": 49.0, "kretprobe": 168.0}},
    {"source": "Nakryiko 2020 (bench selftest, getpgid)",
     "function": "__x64_sys_getpgid",
     "mcalls_s": {"base": 9.2, "fentry": 8.96, "kprobe": 6.43}},
)


@dataclass(frozen=True)
class ModeFigures:
    """One mode's figures; `verified` says every attached program ran on every call."""

    mode: str
    status: str  # measured | skipped | failed
    rates: tuple[float, ...] = ()  # calls/s per sample
    calls: int = 0
    hits: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""
    added_ns: float | None = None
    ratio_to_kprobe: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def spread_pct(self) -> float:
        """(max - min) / median over the samples, in percent."""
        if len(self.rates) < 2 or not self.median:
            return 0.0
        return 100.0 * (max(self.rates) - min(self.rates)) / self.median

    @property
    def verified(self) -> bool:
        return self.status == "measured" and all(v == self.calls for v in self.hits.values())

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "status": self.status, "reason": self.reason,
                "calls": self.calls, "hits": dict(self.hits), "verified": self.verified,
                "rates": list(self.rates), "median_calls_s": round(self.median, 1),
                "spread_pct": round(self.spread_pct, 2),
                "added_ns": None if self.added_ns is None else round(self.added_ns, 2),
                "ratio_to_kprobe": (None if self.ratio_to_kprobe is None
                                    else round(self.ratio_to_kprobe, 3))}


def parse_mode(raw: Mapping[str, Any]) -> ModeFigures:
    """One guest JSON line -> figures (before comparing with base)."""
    mode = str(raw.get("mode", "?"))
    if raw.get("status") != "measured":
        return ModeFigures(mode, str(raw.get("status", "failed")),
                           reason=str(raw.get("reason", "")))
    rates = tuple(s["calls"] * 1e9 / s["ns"] for s in raw.get("samples", []) if s.get("ns"))
    hits = {str(k): int(v) for k, v in dict(raw.get("hits", {})).items()}
    figures = ModeFigures(mode, "measured", rates, int(raw.get("calls", 0)), hits)
    if not figures.verified:
        missed = ", ".join(f"{k} {v} of {figures.calls}" for k, v in hits.items()
                           if v != figures.calls)
        return ModeFigures(mode, "failed", rates, figures.calls, hits,
                           reason=f"hit count does not match the calls made ({missed}): "
                                  "the probe did not run on every call")
    return figures


def compare(modes: Sequence[ModeFigures], *, paired: bool = False) -> list[ModeFigures]:
    """Fill in ns added per call against base and the ratio of that to kprobe's.

    paired: the i-th sample of every mode was taken in the same round (see lab/bench/probes);
    a mode's cost is then the median of its per-round differences with that round's base,
    which cancels a drift of the host's speed between rounds.
    """
    by_mode = {m.mode: m for m in modes}
    base = by_mode.get("base")
    if base is None or base.status != "measured" or not base.median:
        return list(modes)

    def added(m: ModeFigures) -> float | None:
        if m.status != "measured" or not m.median:
            return None
        if paired and m.mode != "base":
            pairs = [1e9 / r - 1e9 / b for r, b in zip(m.rates, base.rates, strict=False)]
            if pairs:
                return statistics.median(pairs)
        return 1e9 / m.median - 1e9 / base.median

    kprobe = by_mode.get("kprobe")
    kprobe_ns = added(kprobe) if kprobe else None
    out = []
    for m in modes:
        ns = added(m)
        ratio = ns / kprobe_ns if ns is not None and kprobe_ns and kprobe_ns > 0 else None
        out.append(ModeFigures(m.mode, m.status, m.rates, m.calls, m.hits, m.reason, ns, ratio))
    return out


def figures_from(raw_lines: Sequence[Mapping[str, Any]]) -> list[ModeFigures]:
    return compare([parse_mode(raw) for raw in raw_lines])
