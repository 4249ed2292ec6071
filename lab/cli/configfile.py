"""A broken invoke.yaml is a one-paragraph message naming the file, not invoke's traceback."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lab.errors import UsageError

SUFFIXES = (".yaml", ".yml", ".json")
KINDS = {"int": "a number", "float": "a number", "str": "a string", "list": "a list",
         "bool": "a boolean"}


def kind(value: object) -> str:
    return KINDS.get(type(value).__name__, f"a {type(value).__name__}")


def config_files(prefix: Path) -> list[Path]:
    """The files invoke reads for a config prefix (e.g. ~/.invoke -> ~/.invoke.yaml)."""
    return [Path(f"{prefix}{suffix}") for suffix in SUFFIXES if Path(f"{prefix}{suffix}").is_file()]


def check_config_files(paths: Iterable[Path]) -> None:
    """Parse each file as invoke would; UsageError naming the file and the fix if broken."""
    for path in paths:
        check_config_file(path)


def check_config_file(path: Path) -> None:
    import yaml  # json is YAML too, for what invoke accepts here

    hint = (f"Fix {path} (settings go under `lab:` as indented `key: value` lines, spaces "
            "not tabs; see the README's Configuration) or move it away.")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read the configuration file {path}: {exc}. {hint}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"The configuration file {path} is not valid YAML{line}: "
                         f"{problem}. {hint}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise UsageError(f"The configuration file {path} holds {kind(data)}, not "
                         f"a mapping of sections. {hint}")
    section = data.get("lab")
    if section is not None and not isinstance(section, dict):
        raise UsageError(f"In the configuration file {path}, `lab:` is "
                         f"{kind(section)}, not a mapping of settings. {hint}")
