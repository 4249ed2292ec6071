"""`python -m lab.matrix merge OUT RUN_DIR... | table RUN_DIR`: the matrix table for CI."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lab.errors import EXIT_USER, LabError
from lab.matrix.table import merge_runs, write_table

USAGE = "usage: python -m lab.matrix merge OUT RUN_DIR... | table RUN_DIR"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with the markdown on stdout; 1 with a message on a usage or data error."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) >= 3 and args[0] == "merge":
            print(merge_runs([Path(a) for a in args[2:]], Path(args[1])).markdown, end="")
            return 0
        if len(args) == 2 and args[0] == "table":
            print(write_table(Path(args[1])).markdown, end="")
            return 0
    except LabError as exc:
        print(f"fentry-lab: error: {exc}", file=sys.stderr)
        return exc.code
    given = " ".join(args) or "nothing"
    print(f"fentry-lab: error: python -m lab.matrix got {given!r}.\n{USAGE}", file=sys.stderr)
    return EXIT_USER


if __name__ == "__main__":
    raise SystemExit(main())
