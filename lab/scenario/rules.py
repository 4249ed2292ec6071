"""The scenario rules a JSON schema cannot say, checked after the schema passes.

Name equals the file stem; probe names unique, loader fits the source, sources are
real files under ``bpf/`` (no symlink out of it); events name known probes;
alternative kernel ranges are non-empty, do not overlap and leave the main target
some kernel to run on.  Each problem is a :class:`ScenarioError` with its line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from lab.config import SHIPPED
from lab.scenario.model import (
    DEFAULT_LOADER,
    KernelRange,
    ScenarioError,
    YamlPath,
    format_version,
    kernel_version,
)
from lab.scenario.yamlmap import YamlDocument

#: The project root: probe sources are paths relative to it, inside its bpf/ (the clone,
#: or the installed package's lab/_data).
PROJECT: Final = SHIPPED
SOURCES_DIR: Final = "bpf"


def kernel_range(raw: Mapping[str, str]) -> KernelRange:
    """``{min: "5.12", below: "6.2"}`` (schema-checked) -> KernelRange."""
    return KernelRange(
        min=kernel_version(raw["min"]) if "min" in raw else None,
        below=kernel_version(raw["below"]) if "below" in raw else None,
    )


def source_problem(source: str, root: Path = PROJECT) -> str | None:
    """Why ``source`` (relative to ``root``) cannot be a probe source, or None if it can.

    It must be a regular file under ``root/bpf`` that, with symlinks resolved,
    is still under ``root/bpf``: every probe source is uploaded into the guest.
    """
    allowed = f"probe sources are files under {SOURCES_DIR}/ in {root}"
    if Path(source).parts[:1] != (SOURCES_DIR,):
        return f"{source!r} is outside {SOURCES_DIR}/ ({allowed})"
    base = (root / SOURCES_DIR).resolve()
    path = root / source
    try:
        real = path.resolve()
        is_file = real.is_file()
    except (OSError, RuntimeError) as exc:  # a loop of symlinks, a name too long
        return f"{source!r} cannot be read: {getattr(exc, 'strerror', None) or exc} ({allowed})"
    if not real.is_relative_to(base):
        return (f"{source!r} is a symlink to {real}, outside {SOURCES_DIR}/: it would be "
                f"uploaded into the guest ({allowed}, symlinks may not leave it)")
    if not is_file:
        return f"{source!r} does not exist ({allowed})"
    return None


def rule_errors(
    data: Mapping[str, Any], doc: YamlDocument, stem: str, root: Path | None = PROJECT
) -> Iterator[ScenarioError]:
    """Every rule broken by a schema-valid document; ``root`` None skips the file checks."""
    if data["name"] != stem:
        yield doc.error(("name",), f"name {data['name']!r} must equal the file name stem {stem!r}")

    probe_names: list[str] = []
    yield from _probe_errors(data["probes"], ("probes",), doc, probe_names, root)
    yield from _event_errors(data.get("expect", {}), ("expect",), doc, probe_names)

    ranges: list[KernelRange] = []
    valid: dict[int, KernelRange] = {}
    for index, alternative in enumerate(data["requires"].get("alternatives", ())):
        where: YamlPath = ("requires", "alternatives", index)
        kernel = kernel_range(alternative["kernel"])
        if kernel.min is None and kernel.below is None:
            yield doc.error((*where, "kernel"), "needs 'min', 'below' or both")
        elif kernel.min is not None and kernel.below is not None and kernel.min >= kernel.below:
            yield doc.error(
                (*where, "kernel"),
                f"'min' {format_version(kernel.min)} is not below 'below' "
                f"{format_version(kernel.below)}: the range is empty",
            )
        else:
            for other, earlier in enumerate(ranges):
                if kernel.overlaps(earlier):
                    yield doc.error(
                        (*where, "kernel"),
                        f"overlaps requires.alternatives[{other}] ({earlier}): "
                        "ranges may not overlap",
                    )
                    break
            else:
                valid[index] = kernel
        ranges.append(kernel)
        names = probe_names
        if "probes" in alternative:
            names = []
            yield from _probe_errors(alternative["probes"], (*where, "probes"), doc, names, root)
        yield from _event_errors(alternative.get("expect", {}), (*where, "expect"), doc, names)
    yield from _hidden_main(data, valid, doc)


def _hidden_main(
    data: Mapping[str, Any], ranges: Mapping[int, KernelRange], doc: YamlDocument
) -> Iterator[ScenarioError]:
    """An error when the alternatives cover every kernel from requires.kernel up."""
    start = kernel_version(data["requires"]["kernel"])
    version = start
    while True:
        index, covering = next(((i, r) for i, r in ranges.items() if r.contains(version)),
                               (-1, None))
        if covering is None:
            return
        if covering.below is None:
            break
        version = covering.below
    functions = ", ".join(data["requires"]["functions"])
    yield doc.error(
        ("requires", "alternatives", index, "kernel"),
        f"with {covering} the alternatives cover every kernel from requires.kernel "
        f"{format_version(start)} up, so the main target ({functions}) can never run: "
        f"give this range a 'below' (at most {format_version(start)}), or raise requires.kernel "
        "to the first kernel the main target is for",
    )


def _probe_errors(
    probes: Sequence[Mapping[str, Any]],
    where: YamlPath,
    doc: YamlDocument,
    names: list[str],
    root: Path | None,
) -> Iterator[ScenarioError]:
    """Duplicate names, loaders that do not fit the source, bad sources; fills ``names``."""
    probe_lines: dict[str, int] = {}
    for index, probe in enumerate(probes):
        name_path: YamlPath = (*where, index, "name")
        name = probe["name"]
        if name in probe_lines:
            first = probe_lines[name]
            yield doc.error(name_path, f"duplicate probe name {name!r} (first at line {first})")
        else:
            probe_lines[name] = doc.line(name_path)
            names.append(name)
        source: str = probe.get("source", "")
        yield from _loader_errors(probe, (*where, index), doc)
        if not source:
            continue
        problem = None if root is None else source_problem(source, root)
        if problem is not None:
            yield doc.error((*where, index, "source"), problem)


# What each loader takes from a probe entry (beyond name, source, loader).
_LOADER_KEYS = {"libbpf": {"attach", "globals", "records"}, "bcc": set(),
                "bpftrace": {"script", "ready_timeout"},
                "command": {"command", "build", "ready_timeout"}}
_SOURCE_ENDINGS = {"libbpf": (".c",), "bcc": (".py",), "bpftrace": (".bt",),
                   "command": (".c", ".py", ".bt")}


def _loader_errors(probe: Mapping[str, Any], where: YamlPath,
                   doc: YamlDocument) -> Iterator[ScenarioError]:
    """The source and keys a probe gives must fit its loader."""
    loader = probe.get("loader", DEFAULT_LOADER)
    source: str = probe.get("source", "")
    if source and not source.endswith(_SOURCE_ENDINGS[loader]):
        wanted = next(name for name, ends in _SOURCE_ENDINGS.items()
                      if name != "command" and source.endswith(ends))
        kind = ".py" if wanted == "bcc" else ".bt" if wanted == "bpftrace" else ".bpf.c"
        yield doc.error((*where, "source"),
                        f"a {kind} source needs loader {wanted!r}, but the loader is {loader!r}")
    if not source and not (loader == "bpftrace" and "script" in probe):
        yield doc.error((*where, "source"), "a probe needs a source (a bpftrace probe may "
                        "give its program as `script` instead)")
    if loader == "bpftrace" and source and "script" in probe:
        yield doc.error((*where, "script"), "give either `source` or `script`, not both")
    for key in sorted(set(probe) & set().union(*_LOADER_KEYS.values())):
        if key not in _LOADER_KEYS[loader]:
            users = [name for name, keys in _LOADER_KEYS.items() if key in keys]
            yield doc.error((*where, key), f"`{key}` is for loader {' or '.join(users)}, not "
                            f"{loader!r}")


def _event_errors(
    expect: Mapping[str, Any], where: YamlPath, doc: YamlDocument, probe_names: Sequence[str]
) -> Iterator[ScenarioError]:
    for kind in ("events", "maps", "output"):
        for index, entry in enumerate(expect.get(kind, ())):
            if entry["probe"] not in probe_names:
                yield doc.error(
                    (*where, kind, index, "probe"),
                    f"unknown probe {entry['probe']!r} (probes: {', '.join(probe_names)})",
                )
    for index, entry in enumerate(expect.get("maps", ())):
        if ("global" in entry) == ("map" in entry):
            yield doc.error((*where, "maps", index), "give exactly one of `global` or `map`")
        if "key" in entry and "global" in entry:
            yield doc.error((*where, "maps", index, "key"), "`key` is for a `map`")
        if not {"equals", "min", "max"} & set(entry):
            yield doc.error((*where, "maps", index), "give `equals`, or `min` and/or `max`")
    for index, entry in enumerate(expect.get("output", ())):
        if ("contains" in entry) == ("regex" in entry):
            yield doc.error((*where, "output", index),
                            "give exactly one of `contains` or `regex`")
        if "count" in entry and "min" in entry:
            yield doc.error((*where, "output", index), "give `count` or `min`, not both")
