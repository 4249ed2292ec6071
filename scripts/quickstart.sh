#!/usr/bin/env bash
# From a fresh clone to a checked result: install, build the image, boot the lab, run the
# seed scenario. The lab stays up afterwards (`invoke lab.down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
.venv/bin/invoke lab.up
.venv/bin/invoke scenario run acl-basic
echo "fentry-lab: results are in $(readlink -f results/acl-basic/latest)"
echo "fentry-lab: next: source .venv/bin/activate; invoke --list"
