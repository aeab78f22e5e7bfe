#!/usr/bin/env bash
# Run the test suite under a virtual screen: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec xvfb-run -a .venv/bin/python -m pytest "$@"
