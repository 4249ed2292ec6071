#!/usr/bin/env bash
# Regenerates the lock files after a dependency change in pyproject.toml: uv.lock (for
# `uv sync --locked --group test`) and requirements-test.txt, the same pins with hashes,
# which `scripts/install.sh --test` installs with plain pip (--require-hashes).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
    python3 -m venv .venv-lock
    .venv-lock/bin/python -m pip install -q uv
    uv=.venv-lock/bin/uv
fi
"$uv" lock
"$uv" export --frozen --group test --no-emit-project --no-header --format requirements-txt \
    --output-file requirements-test.txt >/dev/null
echo "fentry-lab: wrote uv.lock and requirements-test.txt" >&2
