"""Hugging Face model types -> converters. A converter is a pure function
(config.json dict, tensors) -> (vlmzoo config, tensors under vlmzoo names, names no rule knows);
it never builds a model. Which family loads which model types is family data
(configs/families/*.json, `hf_model_types`); a test checks the two agree."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .hf_clip import convert_clip, convert_siglip
from .hf_llava import convert_llava

Converter = Callable[[dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]]

HF_CONVERTERS: dict[str, Converter] = {"llava": convert_llava, "clip": convert_clip, "siglip": convert_siglip}
# What a folder of another supported architecture holds that vlmzoo cannot load yet, by model type.
UNSUPPORTED: dict[str, str] = {}
