"""Finding, listing and loading scenario files: read, validate, build the model.

A scenario is a YAML file in ``scenarios/``.  Loading reads it with limits
(:mod:`lab.scenario.yamlmap`), validates it against ``scenarios/schema.json``
(:mod:`lab.scenario.schema`), checks the rules a schema cannot say
(:mod:`lab.scenario.rules`) and builds a :class:`Scenario`.  Every problem is a
:class:`ScenarioError` whose text is ``FILE:LINE: PATH: MESSAGE``, e.g.
``acl-basic.yaml:14: steps[2].as: expected a user name``; only the first problem
(in document order) is reported.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

from lab.scenario.model import (
    DEFAULT_EXIT,
    DEFAULT_LOADER,
    DEFAULT_MIN,
    DEFAULT_TIMEOUT,
    DEFAULT_USER,
    Alternative,
    EventExpectation,
    MapExpectation,
    OutputExpectation,
    Probe,
    Requires,
    Scenario,
    ScenarioError,
    Step,
    default_collect,
    kernel_version,
)
from lab.scenario.rules import PROJECT, kernel_range, rule_errors
from lab.scenario.schema import validate
from lab.scenario.yamlmap import MAX_BYTES, parse_yaml

#: A scenario name: what ``scenario run NAME`` accepts (the schema's 'name' rule).
NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_NAME_RULE: Final = ("lower-case letters, digits and '-', not starting with '-', "
                     "at most 64 characters")


def load_scenario(path: Path, root: Path | None = PROJECT) -> Scenario:
    """Read, validate and build the scenario in ``path``; raises ScenarioError.

    Probe sources are checked against ``root``'s ``bpf/`` (None skips that check).
    """
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(path.name[:80], 0, "",
                            f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(path.name, 0, "", f"refused: the file is over {MAX_BYTES} bytes "
                            "(1 MiB); a scenario is a few kilobytes of YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(path.name, line, "", "not valid UTF-8") from None
    return _parse(text, path, root)


def parse_scenario(text: str, filename: str, root: Path | None = PROJECT) -> Scenario:
    """Validate and build a scenario from text; ``filename`` names it in errors.

    The scenario's ``name`` must equal the stem of ``filename``.
    """
    return _parse(text, Path(filename), root)


def _parse(text: str, path: Path, root: Path | None) -> Scenario:
    if len(text) > MAX_BYTES:
        raise ScenarioError(path.name, 0, "", f"refused: the text is over {MAX_BYTES} "
                            "characters (1 MiB); a scenario is a few kilobytes of YAML")
    doc = parse_yaml(text, path.name)
    validate(doc)
    data = cast(dict[str, Any], doc.data)
    errors = list(rule_errors(data, doc, path.stem, root))
    if errors:
        raise min(errors, key=lambda error: error.line)
    return _build(data, path)


def _build_step(raw: Mapping[str, Any]) -> Step:
    argv: tuple[str, ...] | None = tuple(raw["run"]) if "run" in raw else None
    shell: str | None = raw.get("shell")
    default_name = shlex.join(argv) if argv is not None else cast(str, shell)
    return Step(
        name=raw.get("name", default_name),
        argv=argv,
        shell=shell,
        user=raw.get("as", DEFAULT_USER),
        expect_exit=raw.get("expect_exit", DEFAULT_EXIT),
        expect_stdout=raw.get("expect_stdout"),
        expect_stderr=raw.get("expect_stderr"),
        timeout=raw.get("timeout", DEFAULT_TIMEOUT),
    )


def _build_event(raw: Mapping[str, Any]) -> EventExpectation:
    count: int | None = raw.get("count")
    return EventExpectation(
        probe=raw["probe"],
        match=MappingProxyType(dict(raw.get("match", {}))),
        count=count,
        min=count if count is not None else raw.get("min", DEFAULT_MIN),
    )


def _build_probes(raw: Sequence[Mapping[str, Any]]) -> tuple[Probe, ...]:
    return tuple(
        Probe(name=p["name"], source=p.get("source", ""),
              loader=p.get("loader", DEFAULT_LOADER), attach=tuple(p.get("attach", ())),
              globals=MappingProxyType(dict(p.get("globals", {}))),
              records=MappingProxyType(dict(p.get("records", {}))), script=p.get("script"),
              command=tuple(p["command"]) if "command" in p else None,
              build=tuple(p["build"]) if "build" in p else None,
              ready_timeout=p.get("ready_timeout", 60))
        for p in raw
    )


def _build_map(raw: Mapping[str, Any]) -> MapExpectation:
    equals = raw.get("equals")
    return MapExpectation(probe=raw["probe"], glob=raw.get("global"), map=raw.get("map"),
                          key=raw.get("key"),
                          equals=tuple(equals) if isinstance(equals, list) else equals,
                          min=raw.get("min"), max=raw.get("max"))


def _build_output(raw: Mapping[str, Any]) -> OutputExpectation:
    count: int | None = raw.get("count")
    return OutputExpectation(probe=raw["probe"], contains=raw.get("contains"),
                             regex=raw.get("regex"), count=count,
                             min=count if count is not None else raw.get("min", DEFAULT_MIN))


def _build_alternative(raw: Mapping[str, Any], index: int) -> Alternative:
    functions = tuple(raw["functions"])
    expect: Mapping[str, Any] | None = raw.get("expect")
    return Alternative(
        kernel=kernel_range(raw["kernel"]),
        functions=functions,
        reason=raw.get("reason", ""),
        probes=_build_probes(raw["probes"]) if "probes" in raw else None,
        events=None if expect is None else tuple(
            _build_event(event) for event in expect.get("events", ())),
        trace=None if expect is None else tuple(expect.get("trace", ())),
        collect=default_collect(raw["collect"], functions) if "collect" in raw else None,
        index=index,
    )


def _build(data: Mapping[str, Any], path: Path) -> Scenario:
    needs = data["requires"]
    requires = Requires(
        kernel=kernel_version(needs["kernel"]),
        functions=tuple(needs.get("functions", ())),
        tracepoints=tuple(needs.get("tracepoints", ())),
        kfuncs=tuple(needs.get("kfuncs", ())),
        ksyms=tuple(needs.get("ksyms", ())),
    )
    expect: Mapping[str, Any] = data.get("expect", {})
    return Scenario(
        name=data["name"],
        description=data["description"],
        requires=requires,
        probes=_build_probes(data["probes"]),
        setup=tuple(_build_step(step) for step in data.get("setup", ())),
        steps=tuple(_build_step(step) for step in data["steps"]),
        events=tuple(_build_event(event) for event in expect.get("events", ())),
        trace=tuple(expect.get("trace", ())),
        collect=default_collect(data.get("collect", {}), requires.functions),
        path=path,
        alternatives=tuple(
            _build_alternative(raw, index)
            for index, raw in enumerate(data["requires"].get("alternatives", ()))
        ),
        maps=tuple(_build_map(m) for m in expect.get("maps", ())),
        output=tuple(_build_output(o) for o in expect.get("output", ())),
        include_lab_processes=bool(expect.get("include_lab_processes", False)),
    )


def list_scenarios(scenarios_dir: Path) -> list[Path]:
    """The ``*.yaml`` files in ``scenarios_dir``, sorted by name."""
    if not scenarios_dir.is_dir():
        return []
    return sorted(p for p in scenarios_dir.glob("*.yaml") if p.is_file())


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def find_scenario(name_or_path: str, scenarios_dir: Path) -> Path:
    """Resolve a scenario name (``acl-basic``) or an existing ``.yaml`` file path.

    A name is plain (see :data:`NAME_PATTERN`) and is looked up only inside
    ``scenarios_dir`` (a symlink there may not lead out of it); an unknown name is
    an error listing the known ones.  A path to an existing file is taken as given.
    """
    value = name_or_path
    shown = repr(value) if len(value) <= 80 else f"{value[:40]!r}... ({len(value)} characters)"
    if value.endswith(".yaml") and _is_file(Path(value)):
        return Path(value)
    if "/" in value or ".." in value or "\0" in value or "\\" in value:
        raise ScenarioError(
            "",
            0,
            "",
            f"bad scenario {shown}: not an existing .yaml file, and scenario names "
            "may not contain '/' or '..'",
        )
    stem = value.removesuffix(".yaml")
    if not NAME_PATTERN.fullmatch(stem):
        raise ScenarioError("", 0, "", f"bad scenario name {shown}: a scenario name is "
                            f"{_NAME_RULE} (or give the path of a .yaml file)")
    candidate = scenarios_dir / f"{stem}.yaml"
    if _is_file(candidate):
        real = candidate.resolve()
        if not real.is_relative_to(scenarios_dir.resolve()):
            raise ScenarioError("", 0, "", f"scenario {shown} is a symlink to {real}, outside "
                                f"{scenarios_dir}: a name only names files in that folder "
                                "(give the file's path to use it)")
        return candidate
    known = [p.stem for p in list_scenarios(scenarios_dir)]
    listing = f"known: {', '.join(known)}" if known else f"no scenarios in {scenarios_dir}"
    raise ScenarioError("", 0, "", f"unknown scenario {shown} ({listing})")
