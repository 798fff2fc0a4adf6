#!/usr/bin/env bash
# All tests: sets up the machine, builds the extension and the C++ tests, runs ctest and pytest, then
# the C++ tests and a Python subset again under AddressSanitizer + UndefinedBehaviorSanitizer
# (scripts/sanitize.sh, its own build folder build/asan; ~6.5 min on 2 cores from a clean clone).
# VLMZOO_SANITIZE=0 skips that second part (a developer's quick run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/dev_build.sh
ctest --test-dir build/dev --output-on-failure -j 2
# The Python package's layers point only down and hold no import circle (pyproject.toml, [tool.importlinter]).
PYTHONPATH=python lint-imports
python3 -m pytest tests/python -q "$@"
if [ "${VLMZOO_SANITIZE:-1}" != 0 ]; then
  bash scripts/sanitize.sh
fi
