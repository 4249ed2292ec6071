"""The `fentry-lab` command: invoke's Program over this project's tasks, with its version.

`fentry-lab lab.up` is `invoke lab.up` from any directory: the project configuration is
the current directory's invoke.yaml, and your own scenarios/ and bpf/ are found there.
Core options that do nothing for these tasks (--echo, --dry, --pty, ...) are left out;
completion also offers the scenario words, scenario names and releases.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.program import Program

from lab.cli.configfile import check_config_files, config_files
from lab.cli.pipe import silence_stdout
from lab.errors import LabError

UNUSED_CORE = {"command-timeout", "dry", "echo", "hide", "pty", "warn-only",
               "prompt-for-sudo-password"}
RELEASE_FLAGS = {"--release", "--releases"}
NAME_TAKERS = {"scenario.run", "scenario.validate", "scenario.show", "matrix.run", "matrix"}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("fentry-lab")
    except PackageNotFoundError:
        return "0+unknown"


class LabProgram(Program):
    def core_args(self) -> list[Argument]:
        args: list[Argument] = super().core_args()
        return [arg for arg in args if arg.name not in UNUSED_CORE]

    def create_config(self) -> None:
        home = Path.home()
        self._checked([Path("/etc/invoke"), home / ".invoke"])
        super().create_config()

    def parse_collection(self) -> None:
        super().parse_collection()
        # The user's project is the current directory: its invoke.yaml is the project config.
        self._checked([Path.cwd() / "invoke"])
        self.config.set_project_location(str(Path.cwd()))
        self.config.load_project()

    def update_config(self, merge: bool = True) -> None:
        runtime = self.args.config.value
        if runtime:
            self._checked([Path(runtime).with_suffix("")] if Path(runtime).suffix else [])
        self.config.set_runtime_path(runtime)
        self.config.load_runtime(merge=False)
        if merge:
            self.config.merge()

    def parse_cleanup(self) -> None:
        if self.args.complete.value:
            self._complete()
        super().parse_cleanup()

    def _checked(self, prefixes: list[Path]) -> None:
        try:
            check_config_files(p for prefix in prefixes for p in config_files(prefix))
        except LabError as exc:
            raise Exit(f"fentry-lab: error: {exc}", code=exc.code) from None

    def _complete(self) -> None:
        """Scenario words and names, releases; everything else as invoke completes it."""
        line = re.sub(rf"^\S*({'|'.join(map(re.escape, self.binary_names))}) ?", "",
                      self.core.remainder)
        tokens = shlex.split(line)
        if tokens and tokens[-1].startswith("-") and tokens[-1] not in RELEASE_FLAGS:
            return  # invoke's own completion of flags
        words = set()
        tail = tokens[-2:] if line.endswith(" ") is False else tokens[-1:]
        if RELEASE_FLAGS & set(tail):
            words |= set(_releases())
        else:
            words |= set(self.collection.task_names)
            for aliases in self.collection.task_names.values():
                words |= set(aliases)
            if tokens[:1] == ["scenario"] and len(tokens) <= 2:
                words |= {"run", "list", "validate", "show"}
            if NAME_TAKERS & set(tokens) or (tokens[:1] == ["scenario"] and len(tokens) >= 2):
                words |= set(_scenario_names())
        for word in sorted(words):
            print(word)
        raise Exit


def _releases() -> list[str]:
    from lab.config import SHIPPED

    return sorted(p.stem for p in (SHIPPED / "images").glob("*.yaml"))


def _scenario_names() -> list[str]:
    from lab.config import SHIPPED

    names = set()
    for directory in (Path.cwd() / "scenarios", SHIPPED / "scenarios"):
        names |= {p.stem for p in directory.glob("*.yaml")}
    return sorted(names)


def make_program() -> LabProgram:
    from lab.cli.collection import ns

    return LabProgram(namespace=ns, name="fentry-lab", binary="fentry-lab",
                      binary_names=["fentry-lab"], version=version())


def main(argv: Any = None) -> None:
    try:
        make_program().run(argv)
    except BrokenPipeError:  # `fentry-lab --list | head`: the reader went away, not an error
        silence_stdout()
        sys.exit(0)
