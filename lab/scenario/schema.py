"""Scenario validation with ``jsonschema`` against ``scenarios/schema.json``, as lines.

``scenarios/schema.json`` (JSON Schema draft 2020-12) is the one source of truth,
published for editors.  This module runs it with the ``jsonschema`` library and
turns the first error in document order into ``file:line: path: message``: a
schema node's ``x-expect`` gives "expected <x-expect>", its ``x-message`` the
whole message; unknown and missing keys are named with what is allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Final, cast

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from lab.config import SHIPPED
from lab.scenario.model import ScenarioError, YamlPath
from lab.scenario.yamlmap import YamlDocument

SCHEMA_PATH: Final = SHIPPED / "scenarios" / "schema.json"

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
#: Sorts after every child of a node: checks of the node as a whole come last.
_AFTER_CHILDREN: Final = 1 << 62


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    """An ECMA-262 schema pattern for Python: an unescaped ``$`` outside a class is ``\\Z``.

    (Python's ``$`` would also match before a final newline.)
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
    return re.compile("".join(out))


def _pattern(
    validator: Any, pattern: str, instance: object, schema: Mapping[str, Any]
) -> Iterable[ValidationError]:
    if isinstance(instance, str) and not _compile(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_integer(_checker: object, value: object) -> bool:
    # JSON Schema counts 3.0 as an integer; a scenario's counts and seconds are whole.
    return isinstance(value, int) and not isinstance(value, bool)


_Validator: Final = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@cache
def load_schema() -> Mapping[str, Any]:
    """The parsed ``scenarios/schema.json`` (checked against the draft's meta-schema)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return cast(Mapping[str, Any], schema)


@cache
def _validator() -> Any:
    return _Validator(load_schema())


def validate(doc: YamlDocument) -> None:
    """Check a parsed document against ``schema.json``; raise the first error."""
    if doc.data is None and not doc.key_lines:
        raise doc.error((), "expected a mapping, got an empty document")
    _check_keys(doc.data, (), doc)
    errors = [_explain(error, doc) for error in _validator().iter_errors(doc.data)]
    if errors:
        raise min(errors, key=lambda item: item[0])[1]


def _check_keys(value: object, path: YamlPath, doc: YamlDocument) -> None:
    """Mapping keys must be strings (``3:`` or ``yes:`` are not names)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise doc.error(path, f"unknown key {key!r}: keys are names, not {_describe(key)}",
                                line=doc.key_line(path, key))
            _check_keys(item, (*path, key), doc)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, (*path, index), doc)


def _describe(value: object) -> str:
    """What a value is, for 'got ...' in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {len(text)}-character value"


def _either(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _annotations(error: ValidationError) -> tuple[str | None, str | None]:
    """(x-expect, x-message) of the schema node the error is about.

    Walks the schema path from the root; a ``$ref``'s siblings win over its target,
    as in ``{"$ref": "#/$defs/identifier", "x-expect": "a probe name"}``.
    """
    root = load_schema()
    node: Mapping[str, Any] = root
    expect: str | None = root.get("x-expect")
    # jsonschema leaves "$ref" out of the schema path: follow one when the next key
    # is not in the node itself.
    keys = list(error.absolute_schema_path)
    index = 0
    while index < len(keys):
        key = keys[index]
        while key not in node and "$ref" in node:
            node = root["$defs"][str(node["$ref"]).removeprefix(_REF_PREFIX)]
            expect = expect or node.get("x-expect")
        if index == len(keys) - 1:
            break  # the failing keyword itself
        if key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
            index += 1
            node = node[key][keys[index]]
            expect = node.get("x-expect")
        elif key in ("items", "not", "if", "then", "else"):
            node = node[key]
            expect = node.get("x-expect")
        index += 1
    return expect, node.get("x-message")


def _unknown_keys(schema: Mapping[str, Any], value: Mapping[str, object]) -> list[str]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    patterns = [_compile(p) for p in schema.get("patternProperties", {})]
    return [key for key in value
            if key not in properties and not any(p.search(key) for p in patterns)]


def _explain(error: ValidationError, doc: YamlDocument) -> tuple[tuple[int, ...], ScenarioError]:
    """(document-order sort key, the error as ``file:line: path: message``)."""
    path: YamlPath = tuple(error.absolute_path)
    order: list[int] = []
    node: object = doc.data
    for part in path:
        order.append(list(cast(dict[object, object], node)).index(part)
                     if isinstance(node, dict) else cast(int, part))
        node = cast(Any, node)[part]
    expect, message = _annotations(error)
    kind = error.validator
    schema = cast(Mapping[str, Any], error.schema)
    value = error.instance
    line: int | None = None
    tail = -1
    if message is not None:
        tail = _AFTER_CHILDREN
    elif kind == "additionalProperties":
        key = _unknown_keys(schema, cast(Mapping[str, object], value))[0]
        allowed = [*schema.get("properties", {}),
                   *(f"keys matching {p}" for p in schema.get("patternProperties", {}))]
        message = f"unknown key {key!r} (allowed: {', '.join(allowed) or 'none'})"
        line = doc.key_line(path, key)
        tail = list(cast(dict[str, object], value)).index(key)
    elif kind == "required":
        missing = next(k for k in cast(list[str], error.validator_value)
                       if k not in cast(Mapping[str, object], value))
        message = f"missing required key {missing!r}"
        tail = _AFTER_CHILDREN
    elif expect is not None:
        message = f"expected {expect}"
        if kind in ("minimum", "maximum"):
            message += f", got {_shown(value)}"
    elif kind == "type":
        types = cast(str | list[str], error.validator_value)
        names = [types] if isinstance(types, str) else list(types)
        message = f"expected {_either([_TYPE_NOUNS[n] for n in names])}, got {_describe(value)}"
    elif kind == "enum":
        listed = ", ".join(repr(item) for item in cast(list[object], error.validator_value))
        message = f"expected one of {listed}, got {_shown(value)}"
    elif kind == "minLength" and error.validator_value == 1:
        message = "expected a non-empty string"
    elif kind == "minItems" and error.validator_value == 1:
        message = "expected a non-empty list"
    elif kind == "pattern":
        message = f"expected a string matching {error.validator_value}, got {_shown(value)}"
    elif kind == "minimum":
        message = f"expected a number >= {error.validator_value}, got {_shown(value)}"
    elif kind == "maximum":
        message = f"expected a number <= {error.validator_value}, got {_shown(value)}"
    else:
        message = error.message
    return (*order, tail), doc.error(path, message, line=line)
