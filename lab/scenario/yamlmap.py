"""YAML text -> plain data (``yaml.safe_load`` semantics) plus the line of every path.

Read with limits, so a hostile or broken file is refused fast with a line number
instead of a ``RecursionError``, a hang or exhausted memory: nesting depth
(:data:`MAX_DEPTH`), alias uses (:data:`MAX_ALIASES`) and nodes after alias
expansion (:data:`MAX_NODES`, the "billion laughs" guard).  The file size cap
(:data:`MAX_BYTES`) is applied by the caller that reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import yaml

from lab.scenario.model import ScenarioError, YamlPath, format_path

MAX_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 64
MAX_ALIASES: Final = 100
MAX_NODES: Final = 100_000

_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_DEPTH_MESSAGE: Final = (f"nested deeper than {MAX_DEPTH} levels; a scenario needs fewer "
                         "than 10")
#: What YAML counts as a line break (so line numbers agree with PyYAML's marks).
_BREAKS: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


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


class _Limit(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops at :data:`MAX_DEPTH` and :data:`MAX_ALIASES`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def fetch_flow_collection_start(self, token_class: type[yaml.Token]) -> None:
        # The scanner reads a flow collection's '[' / '{' ahead of the composer (in
        # quadratic time), so flow nesting is limited here, where it is read.
        if self.flow_level >= MAX_DEPTH:
            line = self.get_mark().line + 1
            raise _Limit(line, _DEPTH_MESSAGE)
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(line, f"more than {MAX_ALIASES} aliases ('*name'); a scenario "
                                   f"needs only a few")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(line, _DEPTH_MESSAGE)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def line_of(text: str, position: int) -> int:
    """1-based line of character ``position``, counting breaks the way YAML does."""
    return len(_BREAKS.findall(text, 0, position)) + 1


def parse_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document the way ``yaml.safe_load`` does, recording lines.

    Differences from ``safe_load``: duplicate mapping keys, recursive aliases and
    documents over the limits are errors.  Every problem is a :class:`ScenarioError`.
    """
    name = Path(filename).name
    try:
        loader = _LimitedLoader(text)  # the reader checks the characters here
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(name, text, exc) from None
    except _Limit as exc:
        raise ScenarioError(name, exc.line, "", f"refused YAML: {exc.message}") from None
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
        line = line_of(text, int(exc.position))
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
        self._nodes = 0
        self.lines: dict[YamlPath, int] = {}
        self.key_lines: dict[tuple[YamlPath, object], int] = {}

    def _fail(self, node: yaml.Node, message: str, path: str = "") -> ScenarioError:
        return ScenarioError(self._filename, node.start_mark.line + 1, path, message)

    def convert(self, node: yaml.Node, path: YamlPath) -> object:
        # Aliases are shared nodes: expanding them is where an alias bomb explodes.
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self._fail(node, f"refused YAML: more than {MAX_NODES} values once aliases "
                                   "are expanded (an alias bomb?); a scenario has a few "
                                   "hundred")
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
            raise self._fail(
                node, _one_line(f"invalid YAML: cannot construct {node.tag} value: {exc}")
            ) from None

    def _enter(self, node: yaml.Node) -> None:
        if id(node) in self._active:
            raise self._fail(node, "invalid YAML: recursive alias (a collection containing itself)")
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
                    raise self._fail(
                        key_node,
                        "invalid YAML: a mapping key must be a scalar (found unhashable key)",
                        format_path(path),
                    ) from None
                if index >= merged:
                    if key in first_seen:
                        raise self._fail(
                            key_node,
                            f"duplicate key {key!r} (first at line {first_seen[key]})",
                            format_path(path),
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
