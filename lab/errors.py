"""The one exception type the lab raises for failures a user can act on."""

from __future__ import annotations


class LabError(Exception):
    """A failure with a one-paragraph message that says what happened and what to do.

    Tasks turn it into a non-zero exit (``code``) without a traceback.
    """

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message
