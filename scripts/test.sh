#!/usr/bin/env bash
# Installs everything the test suite needs into .venv, then runs it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "backend,training,dev"
exec .venv/bin/python -m pytest "$@"
