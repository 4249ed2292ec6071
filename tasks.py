"""fentry-lab tasks for `invoke` in a clone: `invoke --list` shows them.

The tasks live in lab/cli/ (one module per namespace, see lab/cli/collection.py); the
installed command `fentry-lab` runs the same collection. A broken invoke.yaml next to this
file is reported here, before invoke's own loader would end in a traceback; a closed
pipe (`invoke --list | head`) ends quietly.
"""

from __future__ import annotations

from pathlib import Path

from invoke.exceptions import Exit

from lab.cli.configfile import check_config_files, config_files
from lab.cli.pipe import quiet_broken_pipe
from lab.errors import LabError

try:
    check_config_files(config_files(Path(__file__).resolve().parent / "invoke"))
except LabError as exc:
    raise Exit(f"fentry-lab: error: {exc}", code=exc.code) from None

from lab.cli.collection import ns

quiet_broken_pipe()  # `invoke --list | head`: invoke's own printing is not ours to wrap

__all__ = ["ns"]
