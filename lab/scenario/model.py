"""Scenario files: the model, YAML loading with line numbers, and strict validation.

A scenario is a YAML file in ``scenarios/``.  Its format is described by
``scenarios/schema.json`` (JSON Schema, draft 2020-12), published for editors and
used here for validation by a small validator that understands just the keywords
the schema needs.  Rules a schema cannot express simply (name equals the file
stem, one of ``run``/``shell``, ``count`` xor ``min``, known probe names, loader
matching the source type, unique probe names) are checked afterwards.

Every problem is a :class:`ScenarioError` whose text is
``FILE:LINE: PATH: MESSAGE``, e.g. ``acl-basic.yaml:14: steps[2].as: expected a
user name``.  Only the first problem (in document order) is reported.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn, cast

import yaml

from lab.config import SHIPPED
from lab.errors import LabError

SCHEMA_PATH: Final = SHIPPED / "scenarios" / "schema.json"

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


# --------------------------------------------------------------------------- errors


class ScenarioError(LabError):
    """A scenario that cannot be used; ``str()`` gives ``file:line: path: message``.

    ``line`` is 1-based, or 0 when no line applies (then it is left out of the
    text, as are an empty ``file`` or ``path``).  ``message`` is the bare message.
    """

    def __init__(self, file: str, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return ": ".join(part for part in (where, self.path, self.message) if part)

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, int, str, str]]:
        return (type(self), (self.file, self.line, self.path, self.message))


class SchemaError(Exception):
    """``schema.json`` uses something the validator does not understand (a bug)."""


def format_path(path: YamlPath) -> str:
    """``("steps", 2, "as")`` -> ``steps[2].as``; the root is ``(top)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top)"


# --------------------------------------------------------------------------- YAML


_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlDocument:
    """Plain data equal to ``yaml.safe_load(text)``, plus where each part came from."""

    data: object
    #: 1-based line of the node at each path.
    lines: Mapping[YamlPath, int]
    #: 1-based line of each mapping key, by (path of the mapping, key).
    key_lines: Mapping[tuple[YamlPath, object], int]
    #: File name used in messages (a basename).
    filename: str

    def line(self, path: YamlPath) -> int:
        return self.lines.get(path, 1)

    def key_line(self, path: YamlPath, key: object) -> int:
        return self.key_lines.get((path, key), self.line(path))

    def error(self, path: YamlPath, message: str, line: int | None = None) -> ScenarioError:
        where = self.line(path) if line is None else line
        return ScenarioError(self.filename, where, format_path(path), message)


def parse_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document the way ``yaml.safe_load`` does, recording lines.

    Differences from ``safe_load``: duplicate mapping keys and recursive aliases
    are errors.  Every problem is a :class:`ScenarioError`.
    """
    name = Path(filename).name
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(name, text, exc) from None
    if root is None:
        return YamlDocument(None, {(): 1}, {}, name)
    converter = _Converter(name, text)
    data = converter.convert(root, ())
    return YamlDocument(data, converter.lines, converter.key_lines, name)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_error(filename: str, text: str, exc: yaml.YAMLError) -> ScenarioError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        message = f"invalid YAML: {exc.problem or exc.context or 'malformed document'}"
        if exc.problem and exc.context:
            context = exc.context
            if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                context += f" at line {exc.context_mark.line + 1}"
            if exc.problem.startswith("but "):
                message = f"invalid YAML: {context}, {exc.problem}"
            else:
                message += f" ({context})"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, int(exc.position)) + 1
        message = f"invalid YAML: {str(exc).splitlines()[0]}"
    else:
        line = 1
        message = f"invalid YAML: {str(exc) or type(exc).__name__}"
    return ScenarioError(filename, line, "", _one_line(message))


class _Converter:
    """Node tree -> plain data, with SafeLoader semantics and per-path lines."""

    def __init__(self, filename: str, text: str) -> None:
        self._filename = filename
        self._text = text
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()
        self._merged: dict[int, int] = {}
        self.lines: dict[YamlPath, int] = {}
        self.key_lines: dict[tuple[YamlPath, object], int] = {}

    def convert(self, node: yaml.Node, path: YamlPath) -> object:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return self._sequence(node, path)
        # Scalars, and collections with other tags (!!set, !!omap, ...): let
        # PyYAML's safe constructor do exactly what safe_load does.
        return self._construct(node)

    def _construct(self, node: yaml.Node) -> object:
        try:
            return cast(object, self._constructor.construct_object(node, deep=True))
        except yaml.YAMLError as exc:
            raise _yaml_error(self._filename, self._text, exc) from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise ScenarioError(
                self._filename,
                node.start_mark.line + 1,
                "",
                _one_line(f"invalid YAML: cannot construct {node.tag} value: {exc}"),
            ) from None

    def _enter(self, node: yaml.Node) -> None:
        if id(node) in self._active:
            raise ScenarioError(
                self._filename,
                node.start_mark.line + 1,
                "",
                "invalid YAML: recursive alias (a collection containing itself)",
            )
        self._active.add(id(node))

    def _mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[object, object]:
        self._enter(node)
        try:
            if any(key.tag == _MERGE_TAG for key, _ in node.value):
                own = sum(1 for key, _ in node.value if key.tag != _MERGE_TAG)
                try:
                    self._constructor.flatten_mapping(node)
                except yaml.YAMLError as exc:
                    raise _yaml_error(self._filename, self._text, exc) from None
                # flatten_mapping puts the merged pairs first, then the node's own.
                self._merged[id(node)] = len(node.value) - own
            merged = self._merged.get(id(node), 0)
            result: dict[object, object] = {}
            first_seen: dict[object, int] = {}
            for index, (key_node, value_node) in enumerate(node.value):
                key = self._construct(key_node)
                key_line = key_node.start_mark.line + 1
                try:
                    hash(key)
                except TypeError:
                    raise ScenarioError(
                        self._filename,
                        key_line,
                        format_path(path),
                        "invalid YAML: a mapping key must be a scalar (found unhashable key)",
                    ) from None
                if index >= merged:
                    if key in first_seen:
                        raise ScenarioError(
                            self._filename,
                            key_line,
                            format_path(path),
                            f"duplicate key {key!r} (first at line {first_seen[key]})",
                        )
                    first_seen[key] = key_line
                self.key_lines[(path, key)] = key_line
                child = (*path, key if isinstance(key, str) else repr(key))
                result[key] = self.convert(value_node, child)
            return result
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, path: YamlPath) -> list[object]:
        self._enter(node)
        try:
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))


# --------------------------------------------------------------------------- schema

_KEYWORDS: Final = frozenset(
    {
        "type",
        "properties",
        "patternProperties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "pattern",
        "minimum",
        "minItems",
        "minLength",
        "$ref",
        "$defs",
        "x-expect",
    }
)
_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples"}
)
_TYPE_NOUNS: Final = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}
_REF_PREFIX: Final = "#/$defs/"


@cache
def load_schema() -> Mapping[str, Any]:
    """The parsed ``scenarios/schema.json``, checked to use only supported keywords."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    if not isinstance(schema, dict):
        raise SchemaError(f"{SCHEMA_PATH}: the schema must be a JSON object")
    _check_schema(schema, schema, "#")
    return cast(Mapping[str, Any], schema)


def _check_schema(node: Any, root: Mapping[str, Any], where: str) -> None:
    def bad(message: str) -> NoReturn:
        raise SchemaError(f"{SCHEMA_PATH.name}: {where}: {message}")

    if not isinstance(node, dict):
        bad("a schema must be a JSON object")
    for keyword, value in node.items():
        if keyword not in _KEYWORDS and keyword not in _ANNOTATIONS:
            bad(f"unsupported keyword {keyword!r}")
        inner = f"{where}/{keyword}"
        if keyword == "type":
            names = [value] if isinstance(value, str) else value
            if (
                not isinstance(names, list)
                or not names
                or any(name not in _TYPE_NOUNS for name in names)
            ):
                bad(f"bad type {value!r}")
        elif keyword in ("properties", "patternProperties", "$defs"):
            if not isinstance(value, dict):
                bad(f"{keyword} must be an object")
            for name, sub in value.items():
                if keyword == "patternProperties":
                    _compile(name)
                _check_schema(sub, root, f"{inner}/{name}")
        elif keyword == "items":
            _check_schema(value, root, inner)
        elif keyword == "additionalProperties":
            if value is not False:
                bad("only 'additionalProperties: false' is supported")
        elif keyword == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad("required must be a list of strings")
        elif keyword == "enum":
            if not isinstance(value, list) or not value:
                bad("enum must be a non-empty list")
        elif keyword == "pattern":
            if not isinstance(value, str):
                bad("pattern must be a string")
            _compile(value)
        elif keyword in ("minimum", "minItems", "minLength"):
            if not isinstance(value, int) or isinstance(value, bool):
                bad(f"{keyword} must be an integer")
        elif keyword == "$ref":
            if not isinstance(value, str) or not value.startswith(_REF_PREFIX):
                bad("only local references '#/$defs/NAME' are supported")
            if value.removeprefix(_REF_PREFIX) not in root.get("$defs", {}):
                bad(f"unresolved reference {value!r}")
        elif keyword == "x-expect" and not isinstance(value, str):
            bad("x-expect must be a string")


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 style schema pattern for Python.

    Outside character classes an unescaped ``$`` means end of input (Python's
    ``$`` would also match before a final newline), so it becomes ``\\Z``.
    """
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise SchemaError(f"{SCHEMA_PATH.name}: bad pattern {pattern!r}: {exc}") from None


def _has_type(value: object, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return name == "null" and value is None


def _describe(value: object) -> str:
    """What a value is, for 'got ...' in messages."""
    if value is None:
        return "null"
    for name in ("boolean", "integer", "number", "string", "object", "array"):
        if _has_type(value, name):
            return _TYPE_NOUNS[name]
    return f"a {type(value).__name__}"


def _alternatives(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


class _Validator:
    """Walks a document with the rules of ``schema.json``; raises at the first error."""

    def __init__(self, root: Mapping[str, Any], doc: YamlDocument) -> None:
        self._defs: Mapping[str, Any] = root.get("$defs", {})
        self._doc = doc

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        target = self._resolve(self._defs[ref.removeprefix(_REF_PREFIX)])
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        return {**target, **siblings}

    def check(self, value: object, schema: Mapping[str, Any], path: YamlPath) -> None:
        schema = self._resolve(schema)
        expect = schema.get("x-expect")

        def fail(default: str) -> NoReturn:
            raise self._doc.error(path, f"expected {expect}" if expect else default)

        types = schema.get("type")
        if types is not None:
            names: list[str] = [types] if isinstance(types, str) else list(types)
            if not any(_has_type(value, name) for name in names):
                wanted = _alternatives([_TYPE_NOUNS[name] for name in names])
                fail(f"expected {wanted}, got {_describe(value)}")
        if "enum" in schema:
            allowed: list[object] = schema["enum"]
            if not any(type(value) is type(item) and value == item for item in allowed):
                listed = ", ".join(repr(item) for item in allowed)
                fail(f"expected one of {listed}, got {value!r}")
        if isinstance(value, str):
            minimum_length = schema.get("minLength")
            if minimum_length is not None and len(value) < minimum_length:
                fail(
                    "expected a non-empty string"
                    if minimum_length == 1
                    else f"expected a string of at least {minimum_length} characters"
                )
            pattern = schema.get("pattern")
            if pattern is not None and not _compile(pattern).search(value):
                fail(f"expected a string matching {pattern}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            minimum = schema.get("minimum")
            if minimum is not None and value < minimum:
                fail(f"expected a number >= {minimum}, got {value!r}")
        if isinstance(value, list):
            min_items = schema.get("minItems")
            if min_items is not None and len(value) < min_items:
                fail(
                    "expected a non-empty list"
                    if min_items == 1
                    else f"expected a list of at least {min_items} items"
                )
            items = schema.get("items")
            if items is not None:
                for index, item in enumerate(value):
                    self.check(item, items, (*path, index))
        if isinstance(value, dict):
            self._check_object(value, schema, path)

    def _check_object(
        self, value: dict[object, object], schema: Mapping[str, Any], path: YamlPath
    ) -> None:
        properties: Mapping[str, Any] = schema.get("properties", {})
        patterns: Mapping[str, Any] = schema.get("patternProperties", {})
        closed = schema.get("additionalProperties", True) is False
        for key, item in value.items():
            if isinstance(key, str) and key in properties:
                self.check(item, properties[key], (*path, key))
                continue
            matching = [
                sub
                for pattern, sub in patterns.items()
                if isinstance(key, str) and _compile(pattern).search(key)
            ]
            if matching:
                for sub in matching:
                    self.check(item, sub, (*path, cast(str, key)))
            elif closed:
                allowed = [*properties, *(f"keys matching {p}" for p in patterns)]
                raise self._doc.error(
                    path,
                    f"unknown key {key!r} (allowed: {', '.join(allowed) or 'none'})",
                    line=self._doc.key_line(path, key),
                )
        for key in schema.get("required", ()):
            if key not in value:
                raise self._doc.error(path, f"missing required key {key!r}")


def validate(doc: YamlDocument) -> None:
    """Check a parsed document against ``schema.json``; raise the first error."""
    schema = load_schema()
    if doc.data is None and not doc.key_lines and schema.get("type") == "object":
        raise doc.error((), "expected a mapping, got an empty document")
    _Validator(schema, doc).check(doc.data, schema, ())


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Requires:
    kernel: tuple[int, ...]
    functions: tuple[str, ...]


@dataclass(frozen=True)
class Probe:
    name: str
    source: str
    loader: str


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


def kernel_version(release: str) -> tuple[int, ...]:
    """``6.12.117+deb13-cloud-amd64`` -> ``(6, 12, 117)``."""
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
            collect=alternative.collect or _default_collect({}, functions),
            alternatives=(),
            variant=alternative,
        )

    def describe_variant(self) -> str:
        """``main`` or ``requires.alternatives[0] (kernel < 6.2)``."""
        if self.variant is None:
            return "main"
        return f"requires.alternatives[{self.variant.index}] ({self.variant.kernel})"


# --------------------------------------------------------------------------- loading


def load_scenario(path: Path) -> Scenario:
    """Read, validate and build the scenario in ``path``; raises ScenarioError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(path.name, 0, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(path.name, line, "", "not valid UTF-8") from None
    return _parse(text, path)


def parse_scenario(text: str, filename: str) -> Scenario:
    """Validate and build a scenario from text; ``filename`` names it in errors.

    The scenario's ``name`` must equal the stem of ``filename``.
    """
    return _parse(text, Path(filename))


def _parse(text: str, path: Path) -> Scenario:
    doc = parse_yaml(text, path.name)
    validate(doc)
    data = cast(dict[str, Any], doc.data)
    errors = list(_semantic_errors(data, doc, path.stem))
    if errors:
        raise min(errors, key=lambda error: error.line)
    return _build(data, path)


def _semantic_errors(
    data: Mapping[str, Any], doc: YamlDocument, stem: str
) -> Iterator[ScenarioError]:
    if data["name"] != stem:
        yield doc.error(("name",), f"name {data['name']!r} must equal the file name stem {stem!r}")

    probe_names: list[str] = []
    yield from _probe_errors(data["probes"], ("probes",), doc, probe_names)

    for section in ("setup", "steps"):
        for index, step in enumerate(data.get(section, ())):
            if ("run" in step) == ("shell" in step):
                yield doc.error((section, index), "needs exactly one of 'run' or 'shell'")

    yield from _event_errors(data.get("expect", {}), ("expect",), doc, probe_names)

    ranges: list[KernelRange] = []
    for index, alternative in enumerate(data["requires"].get("alternatives", ())):
        where: YamlPath = ("requires", "alternatives", index)
        kernel = _build_range(alternative["kernel"])
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
        ranges.append(kernel)
        names = probe_names
        if "probes" in alternative:
            names = []
            yield from _probe_errors(alternative["probes"], (*where, "probes"), doc, names)
        yield from _event_errors(alternative.get("expect", {}), (*where, "expect"), doc, names)


def _probe_errors(
    probes: Sequence[Mapping[str, Any]], where: YamlPath, doc: YamlDocument, names: list[str]
) -> Iterator[ScenarioError]:
    """Duplicate names and loaders that do not fit the source; fills ``names``."""
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
        source: str = probe["source"]
        loader = probe.get("loader", DEFAULT_LOADER)
        wanted = "bcc" if source.endswith(".py") else "libbpf"
        if loader != wanted:
            kind = ".py" if wanted == "bcc" else ".bpf.c"
            yield doc.error(
                (*where, index, "source"),
                f"a {kind} source needs loader {wanted!r}, but the loader is {loader!r}",
            )


def _event_errors(
    expect: Mapping[str, Any], where: YamlPath, doc: YamlDocument, probe_names: Sequence[str]
) -> Iterator[ScenarioError]:
    for index, event in enumerate(expect.get("events", ())):
        event_path: YamlPath = (*where, "events", index)
        if event["probe"] not in probe_names:
            yield doc.error(
                (*event_path, "probe"),
                f"unknown probe {event['probe']!r} (probes: {', '.join(probe_names)})",
            )
        if "count" in event and "min" in event:
            yield doc.error(event_path, "use either 'count' or 'min', not both")


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


def _build_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _build_range(raw: Mapping[str, Any]) -> KernelRange:
    return KernelRange(
        min=_build_version(raw["min"]) if "min" in raw else None,
        below=_build_version(raw["below"]) if "below" in raw else None,
    )


def _build_probes(raw: Sequence[Mapping[str, Any]]) -> tuple[Probe, ...]:
    return tuple(
        Probe(name=p["name"], source=p["source"], loader=p.get("loader", DEFAULT_LOADER))
        for p in raw
    )


def _default_collect(collect: Mapping[str, Any], functions: Sequence[str]) -> Collect:
    return Collect(
        objdump=tuple(collect.get("objdump", ("__fentry__", *functions))),
        live_text=tuple(collect.get("live_text", functions)),
        bpftrace_lv=tuple(collect.get("bpftrace_lv", functions)),
    )


def _build_alternative(raw: Mapping[str, Any], index: int) -> Alternative:
    functions = tuple(raw["functions"])
    expect: Mapping[str, Any] | None = raw.get("expect")
    return Alternative(
        kernel=_build_range(raw["kernel"]),
        functions=functions,
        reason=raw.get("reason", ""),
        probes=_build_probes(raw["probes"]) if "probes" in raw else None,
        events=None if expect is None else tuple(
            _build_event(event) for event in expect.get("events", ())),
        trace=None if expect is None else tuple(expect.get("trace", ())),
        collect=_default_collect(raw["collect"], functions) if "collect" in raw else None,
        index=index,
    )


def _build(data: Mapping[str, Any], path: Path) -> Scenario:
    requires = Requires(
        kernel=_build_version(data["requires"]["kernel"]),
        functions=tuple(data["requires"]["functions"]),
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
        collect=_default_collect(data.get("collect", {}), requires.functions),
        path=path,
        alternatives=tuple(
            _build_alternative(raw, index)
            for index, raw in enumerate(data["requires"].get("alternatives", ()))
        ),
    )


# --------------------------------------------------------------------------- finding


def list_scenarios(scenarios_dir: Path) -> list[Path]:
    """The ``*.yaml`` files in ``scenarios_dir``, sorted by name."""
    if not scenarios_dir.is_dir():
        return []
    return sorted(p for p in scenarios_dir.glob("*.yaml") if p.is_file())


def find_scenario(name_or_path: str, scenarios_dir: Path) -> Path:
    """Resolve a scenario name (``acl-basic``) or an existing ``.yaml`` file path.

    A name may not contain '/' or '..'; an unknown name is an error listing the
    known ones.
    """
    value = name_or_path
    if value.endswith(".yaml") and "\0" not in value and Path(value).is_file():
        return Path(value)
    if "/" in value or ".." in value or "\0" in value or "\\" in value:
        raise ScenarioError(
            "",
            0,
            "",
            f"bad scenario {value!r}: not an existing .yaml file, and scenario names "
            "may not contain '/' or '..'",
        )
    candidate = scenarios_dir / (value if value.endswith(".yaml") else f"{value}.yaml")
    if value and candidate.is_file():
        return candidate
    known = [p.stem for p in list_scenarios(scenarios_dir)]
    listing = f"known: {', '.join(known)}" if known else f"no scenarios in {scenarios_dir}"
    raise ScenarioError("", 0, "", f"unknown scenario {value!r} ({listing})")
