"""The matrix's typed rows: a release per row, a cell per (release, function).

table.py fills them from a run's recorded files, markdown.py renders them, and
``Matrix.as_json()`` is matrix.json (field order = key order). Instruction runs
(static/live entries) stay small JSON objects: {"bytes", "text"[, "address"]}.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

Insns = dict[str, Any]  # {"bytes": "0f 1f ...", "text": "nop; call __fentry__"[, "address"]}


@dataclass(frozen=True)
class FunctionCell:
    exists: bool | None
    traceable: bool | None
    signature: str | None
    static_entry: Insns | None
    live_detached: Insns | None
    live_attached: Insns | None
    probed: bool
    note: str | None = None


@dataclass(frozen=True)
class Trampolines:
    supported: bool
    why: str


@dataclass(frozen=True)
class Expectations:
    ok: int
    total: int


@dataclass(frozen=True)
class ReleaseRow:
    release: str
    kernel: str | None
    version: list[int] | None
    btf: bool | None
    trampolines: Trampolines | None
    ibt: bool | None  # CONFIG_X86_KERNEL_IBT=y
    ibt_active: bool | None  # the running kernel enforces it (None: not recorded)
    bpftrace: str | None
    libbpf: str | None
    bpftrace_probe: str | None
    fentry_static: Insns | None
    variant: str | None
    status: str
    reason: str | None
    expectations: Expectations | None
    bundle: str | None
    timings: dict[str, float]
    functions: dict[str, FunctionCell] = field(default_factory=dict)


@dataclass(frozen=True)
class Matrix:
    scenario: str | None
    run_id: str
    started: str | None
    jobs: int | str | None
    targets: list[str]
    wall_s: float | None
    images_s: float | None
    sum_of_releases_s: float
    releases: list[ReleaseRow]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
