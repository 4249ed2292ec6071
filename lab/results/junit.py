"""JUnit XML for a run's checks, built with xml.etree (CI systems read it)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from lab.results.check import Check

# Characters XML 1.0 forbids even when escaped (ANSI escapes from a serial log, NULs).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def junit_xml(scenario: str, checks: Sequence[Check], error: str | None,
              duration_s: float) -> str:
    """One <testsuite>: a <testcase> per check, plus a "run" case holding the run's error."""
    failures = sum(1 for c in checks if not c.ok)
    suite = ET.Element("testsuite", {
        "name": _clean(scenario), "tests": str(len(checks) + (1 if error else 0)),
        "failures": str(failures), "errors": "1" if error else "0",
        "time": f"{duration_s:.2f}"})
    for check in checks:
        case = ET.SubElement(suite, "testcase", {"classname": _clean(scenario),
                                                 "name": _clean(check.name)})
        if not check.ok:
            failure = ET.SubElement(case, "failure", {"message": _clean(check.describe())})
            failure.text = _clean(check.describe())
    if error:
        case = ET.SubElement(suite, "testcase", {"classname": _clean(scenario), "name": "run"})
        element = ET.SubElement(case, "error", {"message": _clean(error[:500])})
        element.text = _clean(error)
    ET.indent(suite, space="  ")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(suite, encoding="unicode") + "\n")
