#!/usr/bin/env bash
# All tests: sets up the machine, builds the extension and the C++ tests, runs ctest and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/dev_build.sh
ctest --test-dir build/dev --output-on-failure -j 2
python3 -m pytest tests/python -q "$@"
