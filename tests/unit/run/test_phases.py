"""Phases with cleanups: the cleanups of the phases that ran, in reverse, however it ends."""

from __future__ import annotations

import pytest

from lab.run.phases import Phase, Phases


def test_cleanups_run_in_reverse_after_a_failure() -> None:
    seen: list[str] = []

    def fail() -> None:
        seen.append("steps")
        raise KeyboardInterrupt

    phases = Phases()
    with pytest.raises(KeyboardInterrupt):
        phases.run([
            Phase("upload", lambda: seen.append("upload"), lambda: seen.append("-upload")),
            Phase("attach", lambda: seen.append("attach"), lambda: seen.append("detach")),
            Phase("steps", fail, lambda: seen.append("never: it did not succeed")),
            Phase("collect", lambda: seen.append("never: not reached")),
        ])
    assert seen == ["upload", "attach", "steps", "detach", "-upload"]
    assert set(phases.times) == {"upload", "attach", "steps", "attach-cleanup",
                                 "upload-cleanup"}
