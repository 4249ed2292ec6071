"""The scenario model: Scenario, Step, Probe, Alternative and the one kernel-version rule.

Loading lives in :mod:`lab.scenario.load`; this module only holds the values a loaded
scenario is made of, the :class:`ScenarioError` every scenario problem is, and
:func:`kernel_version`, the one parser of kernel versions in the project (host side).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, cast

from lab import errors

DEFAULT_USER: Final = "root"
DEFAULT_LOADER: Final = "libbpf"
DEFAULT_EXIT: Final = 0
DEFAULT_TIMEOUT: Final = 30
DEFAULT_MIN: Final = 1
LOADERS: Final = ("libbpf", "bcc")
#: fentry/fexit exist since Linux 5.5: an alternative without 'min' still needs this.
FENTRY_MIN_KERNEL: Final = (5, 5)

#: Location of a node: mapping keys (str) and sequence indices (int).
YamlPath = tuple[str | int, ...]
#: Value of an ``expect.events[].match`` field.
Scalar = str | int | bool


class ScenarioError(errors.ScenarioError):
    """A scenario that cannot be used; ``str()`` gives ``file:line: path: message``.

    ``line`` is 1-based, or 0 when no line applies (then it is left out of the
    text, as are an empty ``file`` or ``path``).  ``message`` is the bare message.
    """

    def __init__(self, file: str, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.path = path

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return ": ".join(part for part in (where, self.path, self.message) if part)

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, int, str, str]]:
        return (type(self), (self.file, self.line, self.path, self.message))


def format_path(path: Sequence[str | int]) -> str:
    """``("steps", 2, "as")`` -> ``steps[2].as``; the root is ``(top)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top)"


def kernel_version(release: str) -> tuple[int, ...]:
    """``6.12.117+deb13-cloud-amd64`` -> ``(6, 12, 117)``; ``"6.3"`` -> ``(6, 3)``."""
    return tuple(int(part) for part in re.findall(r"\d+", release.split("-")[0])[:3])


def format_version(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True)
class KernelRange:
    """Kernels from ``min`` (included) up to ``below`` (excluded); None leaves a side open."""

    min: tuple[int, ...] | None = None
    below: tuple[int, ...] | None = None

    def contains(self, version: Sequence[int]) -> bool:
        have = tuple(version)
        return (self.min is None or have >= self.min) and (
            self.below is None or have < self.below)

    def overlaps(self, other: KernelRange) -> bool:
        lowest = (0,)
        starts = max(self.min or lowest, other.min or lowest)
        ends = [end for end in (self.below, other.below) if end is not None]
        return not ends or starts < min(ends)

    def __str__(self) -> str:
        if self.min and self.below:
            return f"{format_version(self.min)} <= kernel < {format_version(self.below)}"
        if self.below:
            return f"kernel < {format_version(self.below)}"
        return f"kernel >= {format_version(self.min or ())}"


@dataclass(frozen=True)
class Requires:
    kernel: tuple[int, ...]
    functions: tuple[str, ...]
    tracepoints: tuple[str, ...] = ()  # CATEGORY:NAME
    kfuncs: tuple[str, ...] = ()
    ksyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    name: str
    source: str  # "" for an inline bpftrace script
    loader: str  # libbpf | bcc | bpftrace | command
    #: libbpf: the programs to attach (empty: all); .rodata/.data/.bss initial values;
    #: the struct each ring or perf buffer's records are, by map name.
    attach: tuple[str, ...] = ()
    globals: Mapping[str, Scalar] = field(default_factory=dict)
    records: Mapping[str, str] = field(default_factory=dict)
    #: bpftrace: inline program text; command: argv and an optional build argv.
    script: str | None = None
    command: tuple[str, ...] | None = None
    build: tuple[str, ...] | None = None
    ready_timeout: int = 60

    def tool_argv(self) -> tuple[str, ...]:
        """bpftrace/command: what runs in the guest, from the uploaded sources' root."""
        if self.loader == "bpftrace":
            return ("bpftrace", "-e", self.script) if self.script else ("bpftrace", self.source)
        if self.command:
            return self.command
        return ("python3", self.source) if self.source.endswith(".py") else (f"./{self.source}",)


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...] | None
    shell: str | None
    user: str
    expect_exit: int
    expect_stdout: str | None
    expect_stderr: str | None
    timeout: int

    def __post_init__(self) -> None:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("a step needs exactly one of argv or shell")

    @property
    def command(self) -> tuple[str, ...]:
        """The argv to execute: ``argv``, or ``("sh", "-c", shell)``."""
        if self.argv is not None:
            return self.argv
        return ("sh", "-c", cast(str, self.shell))


@dataclass(frozen=True)
class MapExpectation:
    probe: str
    glob: str | None  # a global variable (.bss, .data, .rodata), or
    map: str | None  # a map (with key)
    key: Scalar | None
    equals: Scalar | tuple[Scalar, ...] | None
    min: int | None
    max: int | None

    @property
    def label(self) -> str:
        where = f"global {self.glob}" if self.glob else f"map {self.map}[{self.key}]"
        return f"{self.probe} {where}"


@dataclass(frozen=True)
class OutputExpectation:
    probe: str
    contains: str | None
    regex: str | None
    count: int | None
    min: int


@dataclass(frozen=True)
class EventExpectation:
    probe: str
    #: Read-only mapping of event field -> required value.
    match: Mapping[str, Scalar]
    #: Exact number of matching events, or None.
    count: int | None
    #: Least number of matching events (equals ``count`` when that is given).
    min: int


@dataclass(frozen=True)
class Collect:
    objdump: tuple[str, ...]
    live_text: tuple[str, ...]
    bpftrace_lv: tuple[str, ...]


def default_collect(collect: Mapping[str, Sequence[str]], functions: Sequence[str]) -> Collect:
    """``collect`` with each missing list defaulted to ``functions``."""
    return Collect(
        objdump=tuple(collect.get("objdump", ("__fentry__", *functions))),
        live_text=tuple(collect.get("live_text", functions)),
        bpftrace_lv=tuple(collect.get("bpftrace_lv", functions)),
    )


@dataclass(frozen=True)
class Alternative:
    """What a scenario probes on the kernels of one range (``requires.alternatives[i]``).

    None for probes, events/trace (``expect``) or collect means: the scenario's own.
    """

    kernel: KernelRange
    functions: tuple[str, ...]
    reason: str
    probes: tuple[Probe, ...] | None
    events: tuple[EventExpectation, ...] | None
    trace: tuple[str, ...] | None
    collect: Collect | None
    index: int


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    requires: Requires
    probes: tuple[Probe, ...]
    setup: tuple[Step, ...]
    steps: tuple[Step, ...]
    events: tuple[EventExpectation, ...]
    trace: tuple[str, ...]
    collect: Collect
    path: Path
    #: Per kernel range, other targets (``requires.alternatives``).
    alternatives: tuple[Alternative, ...] = ()
    #: Set on the scenario returned by :meth:`for_kernel` when an alternative applies.
    variant: Alternative | None = None
    #: Users' own programs: values in maps and globals, lines a tool printed, and whether
    #: events of the lab's own processes (its SSH sessions, bpftool, helper) count.
    maps: tuple[MapExpectation, ...] = ()
    output: tuple[OutputExpectation, ...] = ()
    include_lab_processes: bool = False

    @property
    def target_functions(self) -> tuple[str, ...]:
        """Every function the scenario may probe, on any kernel (main ones first)."""
        found = list(self.requires.functions)
        for alternative in self.alternatives:
            found += [fn for fn in alternative.functions if fn not in found]
        return tuple(found)

    def alternative_for(self, version: Sequence[int]) -> Alternative | None:
        return next((a for a in self.alternatives if a.kernel.contains(version)), None)

    def for_kernel(self, version: Sequence[int]) -> Scenario:
        """The scenario as it runs on a kernel of this version: its alternative applied.

        Returns ``self`` when no alternative's range contains the version.
        """
        alternative = self.alternative_for(version)
        if alternative is None:
            return self
        functions = alternative.functions
        return replace(
            self,
            requires=Requires(kernel=alternative.kernel.min or FENTRY_MIN_KERNEL,
                              functions=functions),
            probes=alternative.probes if alternative.probes is not None else self.probes,
            events=alternative.events if alternative.events is not None else self.events,
            trace=alternative.trace if alternative.trace is not None else self.trace,
            collect=alternative.collect or default_collect({}, functions),
            alternatives=(),
            variant=alternative,
        )

    def describe_variant(self) -> str:
        """``main`` or ``requires.alternatives[0] (kernel < 6.2)``."""
        if self.variant is None:
            return "main"
        return f"requires.alternatives[{self.variant.index}] ({self.variant.kernel})"
