"""A run's phases as a list of steps with cleanups, timed (little-vm-helper's Step{Do, Cleanup}).

Each phase that succeeded has its cleanup run, in reverse order, however the run ends
(an error, Ctrl-C): so detaching the probes is simply the attach phase's cleanup.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Phase:
    """One phase: do it, and if it succeeded, run its cleanup when the run ends."""

    name: str
    do: Callable[[], None]
    cleanup: Callable[[], None] | None = None


class Phases:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - started, 3)

    def run(self, steps: list[Phase]) -> None:
        """Do the steps in order; the cleanups of the done ones run in reverse, always."""
        done: list[Phase] = []
        try:
            for step in steps:
                with self(step.name):
                    step.do()
                done.append(step)
        finally:
            for step in reversed(done):
                if step.cleanup is not None:
                    with self(f"{step.name}-cleanup"):
                        step.cleanup()
