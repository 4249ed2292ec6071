"""Progress and notices on stderr, so stdout stays for results a user may pipe."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    """One line of progress."""
    print(f"fentry-lab: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"fentry-lab: warning: {message}", file=sys.stderr, flush=True)


class Ticker:
    """Prints "still waiting" lines at a steady pace during a long wait."""

    def __init__(self, what: str, every_s: float = 5.0) -> None:
        self.what = what
        self.every_s = every_s
        self.start = time.monotonic()
        self._next = self.start + every_s

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def tick(self, detail: str = "") -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            extra = f" ({detail})" if detail else ""
            say(f"{self.what}: {self.elapsed:.0f} s{extra}")
