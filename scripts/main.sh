#!/usr/bin/env bash
# The main job: install vlmzoo and compare the built-in architectures on the built-in task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pip install -q --no-build-isolation .
vlmzoo compare --out compare_out "$@"
