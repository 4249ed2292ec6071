"""The results bundle on the host: results/<scenario>/<run id>/, with `latest` beside it.

Files are written as soon as they are known, each atomically (a temporary file renamed
over the name), so a run that fails half way still leaves everything it collected and no
file is ever half written. summary.json is written first with ``status: running`` and only
then does `latest` move, so `latest` never points at a bundle without summary.json, even
after SIGKILL. A full results disk is a LabFailure with the path, never a traceback.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lab.errors import LabFailure
from lab.results.check import Check
from lab.results.junit import junit_xml

TEXT_LIMIT = 8 * 1024 * 1024  # bytes of any one text file kept; the rest is cut and marked


def run_id(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def _disk_error(path: Path, exc: OSError) -> LabFailure:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LabFailure(f"The results disk is full: could not write {path}. Free some space "
                          "(old runs under the results folder can go) or point "
                          "FENTRY_LAB_RESULTS elsewhere, then run again.")
    return LabFailure(f"Could not write {path}: {exc.strerror or exc}. Check the results "
                      "folder (FENTRY_LAB_RESULTS) is a writable directory.")


def write_atomic(path: Path, data: bytes) -> Path:
    """Write data to path through a temporary file renamed over it; LabFailure if it fails."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, exc) from None
    return path


def write_json(path: Path, value: object) -> Path:
    return write_atomic(path, (json.dumps(value, indent=2, default=str) + "\n").encode())


def point_latest(directory: Path, name: str) -> None:
    """Make directory/latest a relative symlink to name, atomically."""
    tmp = directory / f".latest-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        os.replace(tmp, directory / "latest")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(directory / "latest", exc) from None


def new_run_dir(root: Path, first: Mapping[str, object] | None = None) -> Path:
    """A fresh root/<run id>/ (distinct even within one millisecond), then `latest` to it.

    ``first``: JSON files to write (name -> value) before `latest` moves to it.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(root, exc) from None
    base = run_id()
    name, suffix = base, 1
    while True:
        try:
            (root / name).mkdir()
            break
        except FileExistsError:
            suffix += 1
            name = f"{base}-{suffix}"
        except OSError as exc:
            raise _disk_error(root / name, exc) from None
    for file, value in (first or {}).items():
        write_json(root / name / file, value)
    point_latest(root, name)
    return root / name


class ResultsBundle:
    """One run's folder. summary.json exists (``status: running``) from the start."""

    def __init__(self, root: Path, scenario: str,
                 provisional: Mapping[str, object] | None = None) -> None:
        self.scenario_dir = root / scenario
        summary = {"scenario": scenario, "status": "running", **(provisional or {})}
        self.path = new_run_dir(self.scenario_dir, {"summary.json": summary})
        self.run_id = self.path.name

    def write_text(self, name: str, text: str) -> Path:
        data = text.encode("utf-8", "replace")
        if len(data) > TEXT_LIMIT:
            # Cut on a character boundary so the file stays valid UTF-8.
            kept = data[:TEXT_LIMIT].decode("utf-8", "ignore").encode("utf-8")
            cut = len(data) - len(kept)
            data = kept + f"\n[fentry-lab: {cut} more bytes cut]\n".encode()
        return write_atomic(self.path / name, data)

    def write_json(self, name: str, value: object) -> Path:
        return self.write_text(name, json.dumps(value, indent=2, default=str) + "\n")

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, object]]) -> Path:
        return self.write_text(name, "".join(json.dumps(row, default=str) + "\n"
                                             for row in rows))

    def write_junit(self, scenario: str, checks: Sequence[Check], error: str | None,
                    duration_s: float) -> Path:
        return self.write_text("junit.xml", junit_xml(scenario, checks, error, duration_s))
