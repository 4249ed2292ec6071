"""The results bundle on the host: results/<scenario>/<run id>/, with `latest` beside it.

Files are written as soon as they are known, so a run that fails half way still leaves
everything it collected; summary.json says whether the run passed, failed or erred.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr as _xml_quoteattr

from lab.results.check import Check

# Characters XML 1.0 forbids even when escaped (ANSI escapes from a serial log, NULs).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
TEXT_LIMIT = 8 * 1024 * 1024  # bytes of any one text file kept; the rest is cut and marked


def run_id(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


class ResultsBundle:
    def __init__(self, root: Path, scenario: str) -> None:
        self.scenario_dir = root / scenario
        self.scenario_dir.mkdir(parents=True, exist_ok=True)
        base = run_id()
        self.run_id = base
        suffix = 1
        while (self.scenario_dir / self.run_id).exists():
            suffix += 1
            self.run_id = f"{base}-{suffix}"
        self.path = self.scenario_dir / self.run_id
        self.path.mkdir()
        self._point_latest()

    def _point_latest(self) -> None:
        tmp = self.scenario_dir / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.run_id)
        os.replace(tmp, self.scenario_dir / "latest")

    def write_text(self, name: str, text: str) -> Path:
        data = text.encode("utf-8", "replace")
        if len(data) > TEXT_LIMIT:
            # Cut on a character boundary so the file stays valid UTF-8.
            kept = data[:TEXT_LIMIT].decode("utf-8", "ignore").encode("utf-8")
            cut = len(data) - len(kept)
            data = kept + f"\n[fentry-lab: {cut} more bytes cut]\n".encode()
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def write_json(self, name: str, value: object) -> Path:
        return self.write_text(name, json.dumps(value, indent=2, default=str) + "\n")

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, object]]) -> Path:
        return self.write_text(name, "".join(json.dumps(row, default=str) + "\n"
                                             for row in rows))

    def write_junit(self, scenario: str, checks: list[Check], error: str | None,
                    duration_s: float) -> Path:
        def escape(text: str) -> str:
            return _xml_escape(_NOT_XML.sub("\ufffd", text))

        def quoteattr(text: str) -> str:
            return _xml_quoteattr(_NOT_XML.sub("\ufffd", text))

        failures = sum(1 for c in checks if not c.ok)
        cases = []
        for check in checks:
            body = ""
            if not check.ok:
                body = (f"<failure message={quoteattr(check.describe())}>"
                        f"{escape(check.describe())}</failure>")
            cases.append(f'    <testcase classname={quoteattr(scenario)} '
                         f'name={quoteattr(check.name)}>{body}</testcase>')
        if error:
            cases.append(f'    <testcase classname={quoteattr(scenario)} name="run">'
                         f'<error message={quoteattr(error[:500])}>{escape(error)}</error>'
                         "</testcase>")
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuite name={quoteattr(scenario)} tests="{len(cases)}" '
            f'failures="{failures}" errors="{1 if error else 0}" time="{duration_s:.2f}">\n'
            + "\n".join(cases) + "\n</testsuite>\n"
        )
        return self.write_text("junit.xml", xml)
