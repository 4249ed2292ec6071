#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests and the real VM tests under TCG/KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test
echo "fentry-lab: ruff" >&2
.venv/bin/ruff check .
echo "fentry-lab: shellcheck, actionlint" >&2
shellcheck scripts/*.sh .ci/run
.venv/bin/actionlint
echo "fentry-lab: mypy" >&2
.venv/bin/mypy
echo "fentry-lab: import layers (lint-imports)" >&2
.venv/bin/lint-imports --no-cache
echo "fentry-lab: pytest" >&2
exec .venv/bin/python -m pytest "$@"
