"""A reader that went away (`| head`, `| true`) ends a command quietly, not in a traceback."""

from __future__ import annotations

import os
import sys
from types import TracebackType


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def quiet_broken_pipe() -> None:
    """For `invoke` in a clone, whose own printing (`--list`) we do not wrap: a BrokenPipeError
    that reaches the top exits 0, as `fentry-lab` does; any other error is left as it was."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        if issubclass(kind, BrokenPipeError):
            silence_stdout()
            sys.stderr.flush()
            os._exit(0)  # a normal exit would flush stdout again
        previous(kind, value, tb)

    sys.excepthook = hook
