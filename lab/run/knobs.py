"""A probe's `globals:` -> the bytes lab-loader writes into them before loading.

Upstream tools steer their programs with `const volatile` globals in .rodata
(libbpf-tools' `targ_uid`, `min_us`, ...), set by their own loader between open and
load. A scenario sets them by name; their types come from the object's BTF.
"""

from __future__ import annotations

from collections.abc import Mapping

from lab.errors import ScenarioError
from lab.run.events import BtfError, TypeTable

Scalar = str | int | bool


def encode(btf: TypeTable, name: str, value: Scalar, probe: str) -> str:
    """The hex of `value` laid out as global `name`'s type; ScenarioError if it cannot be."""
    def refuse(why: str) -> ScenarioError:
        return ScenarioError(f"Probe {probe!r}: globals.{name}: {why}.")

    type_id = btf.variable_type(name)
    if type_id is None:
        raise refuse("the object has no global variable of that name (see its .rodata, "
                     ".data and .bss in `bpftool btf dump file OBJ`)")
    try:
        t = btf.resolve(type_id)
        size = btf.size(type_id)
    except BtfError as exc:
        raise refuse(str(exc)) from None
    kind = t["kind"]
    if kind == "ENUM" and isinstance(value, str):
        listed = t.get("values")
        values = {str(v["name"]): int(v["val"]) for v in
                  (listed if isinstance(listed, list) else []) if isinstance(v, dict)}
        if value not in values:
            raise refuse(f"{value!r} is not one of {', '.join(values)}")
        value = values[value]
    if kind in ("INT", "ENUM"):
        if isinstance(value, str):
            raise refuse(f"expected a number for a {size}-byte integer, not {value!r}")
        signed = t.get("encoding") == "SIGNED" or kind == "ENUM"
        number = int(value)
        if number < 0 and not signed:  # -1 for "all" is common: take it as all ones
            number &= (1 << (8 * size)) - 1
        try:
            return number.to_bytes(size, "little", signed=signed and number < 0).hex()
        except OverflowError:
            raise refuse(f"{value} does not fit in {size} bytes") from None
    if kind == "ARRAY" and isinstance(value, str):
        data = value.encode()
        if len(data) >= size:
            raise refuse(f"the string is longer than the {size - 1} characters it holds")
        return data.ljust(size, b"\0").hex()
    raise refuse(f"a global of kind {kind} cannot be set from a scenario (use integers, "
                 "enums, booleans or char arrays)")


def loader_args(btf: TypeTable, settings: Mapping[str, Scalar], probe: str) -> list[str]:
    """`-s NAME=HEX` arguments for lab-loader, in a stable order."""
    args: list[str] = []
    for name in sorted(settings):
        args += ["-s", f"{name}={encode(btf, name, settings[name], probe)}"]
    return args
