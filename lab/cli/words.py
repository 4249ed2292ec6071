"""`scenario run NAME` and `matrix run NAME` as words, on invoke's own parser.

The collection's default task is the real `run` task, with a second, optional positional
argument: in `scenario run acl-basic` the first word is the verb and the second the
scenario; in `scenario.run acl-basic` the first word is the scenario. invoke consumes a
positional argument while its value is None, so the second one reports "" (not needed)
unless the first word is a verb that takes a name.
"""

from __future__ import annotations

from typing import Any

from invoke.parser.argument import Argument

from lab.cli.common import LabTask


class _SecondWord(Argument):
    """The word after a verb: wanted only when the first word is a verb taking a name."""

    def __init__(self, first: Argument, verbs: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first = first
        self.verbs = verbs

    @property
    def value(self) -> object:
        if self._value is not None:
            return self._value
        return None if self.first.value in self.verbs else ""

    @value.setter
    def value(self, arg: str) -> None:
        self.set_value(arg, cast=True)


class WordTask(LabTask):
    """A task whose positional arguments are (first word, second word); see the module."""

    verbs: frozenset[str] = frozenset()

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        first, second = (arg for arg in args if arg.positional)
        replaced = _SecondWord(first, self.verbs, names=second.names, kind=second.kind,
                               default=second.default, help=second.help, positional=True,
                               optional=second.optional, attr_name=second.attr_name)
        return [replaced if arg is second else arg for arg in args]


def word_task(verbs: set[str]) -> type[WordTask]:
    """A WordTask class whose second word follows one of `verbs`."""
    return type("WordTask", (WordTask,), {"verbs": frozenset(verbs)})
