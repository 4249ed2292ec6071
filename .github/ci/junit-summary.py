"""JUnit XML files -> a Markdown table for $GITHUB_STEP_SUMMARY (failures listed first)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def summarize(paths: list[Path]) -> str:
    lines = ["## Test results", "", "| report | tests | failures | errors | skipped |",
             "|---|---|---|---|---|"]
    failed: list[str] = []
    for path in paths:
        if not path.is_file():
            continue
        root = ET.parse(path).getroot()  # noqa: S314
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        totals = [sum(int(s.get(key, "0")) for s in suites)
                  for key in ("tests", "failures", "errors", "skipped")]
        lines.append(f"| {path} | " + " | ".join(map(str, totals)) + " |")
        for case in root.iter("testcase"):
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                message = (problem.get("message") or "").splitlines()[:1]
                failed.append(f"- `{case.get('classname', '')}.{case.get('name', '')}`: "
                              f"{message[0] if message else problem.tag}")
    if failed:
        lines += ["", "### Failed", "", *failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(summarize([Path(arg) for arg in sys.argv[1:]]))
