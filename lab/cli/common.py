"""What every task shares: the task class, flag help, settings from flags, error handling.

A task is a function decorated with `@lab_task(...)`: no automatic short flags (a short
flag means one thing everywhere: `-c` is only lab.ssh's --command), integer flags show as
INT and refuse non-numbers with a message, and LabError becomes its exit code and message.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.tasks import Task, task

from lab.cli.pipe import silence_stdout
from lab.errors import LabError, UsageError

if TYPE_CHECKING:
    from lab.config import Settings
    from lab.scenario.model import Scenario

LAB_FLAGS = {
    "name": "Which lab (several can run at once; default: default)",
    "release": "Debian release of the image: trixie (default), bookworm, bullseye, ...",
    "backend": "qemu (default) or vagrant",
    "accel": "auto (default: KVM only when really usable), kvm or tcg",
    "cpus": "vCPUs (default 2; under TCG 2 is fastest)",
    "memory": "guest memory in MiB (default 2048)",
}
SCENARIOS_FLAG = ("Directory of your own scenarios, searched before the shipped ones "
                  "(default: ./scenarios); your probes are in its sibling bpf/")


class IntArgument(Argument):
    """An INT flag whose bad value is a parse error with a message, not a ValueError."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            flag = str(self.name).replace("_", "-")
            raise ParseError(f"fentry-lab: error: --{flag} takes a whole number, "
                             f"not {value!r}.") from None


class LabTask(Task[Any]):
    """invoke's Task with INT flags that fail politely and explicit short flags only."""

    short_flags: Mapping[str, str] = {}  # flag name -> its one-letter short form
    # Flags whose default is None ("not given: from the settings") but whose values are
    # whole numbers: help shows INT and the parser casts them.
    int_flags = frozenset({"cpus", "memory", "jobs", "lines"})

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args: list[Argument] = super().get_arguments(ignore_unknown_help)
        return [self._rebuilt(arg) for arg in args]

    def _rebuilt(self, arg: Argument) -> Argument:
        short = self.short_flags.get(arg.name or "")
        is_int = arg.kind is int or arg.name in self.int_flags
        if not is_int and short is None:
            return arg
        return (IntArgument if is_int else Argument)(
            names=(*arg.names, short) if short else arg.names, kind=int if is_int else arg.kind,
            default=arg.default, help=arg.help, positional=arg.positional,
            optional=arg.optional, incrementable=arg.incrementable, attr_name=arg.attr_name)


def lab_task(*, klass: type[Task[Any]] = LabTask,
             **options: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """`@task` with this project's defaults: no automatic short flags, LabTask."""
    options.setdefault("auto_shortflags", False)
    decorate: Callable[[Callable[..., Any]], Task[Any]] = task(klass=klass, **options)
    return decorate


def settings_from(c: Context, **flags: object) -> Settings:
    """Settings from the `lab:` config section, FENTRY_LAB_* and the given flags, checked."""
    from lab.config import load_settings

    section = c.config.get("lab") or {}
    if not isinstance(section, Mapping):
        raise UsageError(f"The `lab:` section of invoke.yaml is a {type(section).__name__}, "
                         "not a mapping: write settings as `lab:` followed by indented "
                         "`key: value` lines (e.g. `  memory: 4096`).")
    return load_settings(dict(section), flags)


@contextlib.contextmanager
def friendly_errors(interrupt_code: int = 130) -> Iterator[None]:
    try:
        yield
    except LabError as exc:
        raise Exit(f"fentry-lab: error: {exc}", code=exc.code) from None
    except KeyboardInterrupt:
        raise Exit("fentry-lab: interrupted; nothing half-made was kept.",
                   code=interrupt_code) from None


def emit(text: str, end: str = "\n") -> None:
    """Print results to stdout; a reader that went away (`| head`) ends the task quietly."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        raise Exit(code=0) from None


def find_scenario_path(name: str, settings: Settings) -> Path:
    """A scenario file: a path, else NAME.yaml in the user's directory, then the shipped."""
    from lab.scenario.load import find_scenario
    from lab.scenario.model import ScenarioError

    try:
        for directory in settings.scenario_dirs[:-1]:
            try:
                return find_scenario(name, directory)
            except ScenarioError:
                continue
        return find_scenario(name, settings.scenario_dirs[-1])
    except LabError as exc:  # an invalid or unknown scenario is the user's to fix: exit 1
        raise UsageError(str(exc)) from None
    except OSError as exc:  # e.g. a path component longer than the filesystem allows
        raise UsageError(f"Cannot use the scenario {name[:80]!r}: {exc.strerror}. Give a "
                         "scenario name (see `scenario list`) or an existing .yaml file.") from None


def check_choice(flag: str, value: int, low: int, what: str) -> int:
    if value < low:
        raise UsageError(f"--{flag} is {value}: use {low} or more ({what}).")
    return value


def load_checked(path: Path, settings: Settings) -> Scenario:
    """Load a scenario whose probe sources are in the user's bpf/ or else the shipped one.

    The loader checks sources against one project root; the user's directory is tried
    first, and a scenario that fails there is tried against the shipped root.
    """
    from lab.scenario.load import load_scenario
    from lab.scenario.model import ScenarioError

    roots = [directory.parent for directory in settings.bpf_dirs]
    first: ScenarioError | None = None
    for root in roots:
        try:
            return load_scenario(path, root=root)
        except ScenarioError as exc:  # the same for every root unless it is about a source
            first = first or exc
    assert first is not None
    raise first
