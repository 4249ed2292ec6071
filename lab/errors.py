"""The lab's exceptions: one tree whose classes carry their exit codes.

Exit codes (documented in the README): 0 all expectations held; 1 the user's to fix (a bad
flag, setting, name or scenario, a failed expectation, a preflight that cannot pass on this
kernel); 2 the lab itself failed (VM died, SSH lost, guest broken); 130 interrupted.
Tasks turn a LabError into its exit code and one-paragraph message, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER = 1
EXIT_LAB = 2
EXIT_INTERRUPTED = 130


class LabError(Exception):
    """A failure with a one-paragraph message that says what happened and what to do."""

    default_code = EXIT_USER

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code

    def __str__(self) -> str:
        return self.message


class UsageError(LabError):
    """A flag, setting, environment value or name that is not allowed (exit 1)."""


class ScenarioError(LabError):
    """The scenario is invalid, or cannot run on this lab's kernel (exit 1)."""


class PreflightError(ScenarioError):
    """The lab's kernel lacks what the scenario needs; nothing was loaded (exit 1)."""


class ProbeLoadError(ScenarioError):
    """A probe did not build, load or attach (verifier, missing function) (exit 1)."""


class LabFailure(LabError):
    """The lab itself failed: VM died, SSH lost, guest broken, host out of room (exit 2)."""

    default_code = EXIT_LAB


class Interrupted(LabError):
    """Ctrl-C (exit 130)."""

    default_code = EXIT_INTERRUPTED
