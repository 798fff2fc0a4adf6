"""Hugging Face model types -> converters. A converter is a pure function
(config.json dict, tensors) -> (vlmzoo config, tensors under vlmzoo names, names no rule knows);
it never builds a model. Which family loads which model types is family data
(configs/families/*.json, `hf_model_types`); a test checks the two agree."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .hf_blip2 import convert_blip2, convert_instructblip
from .hf_clip import convert_clip, convert_siglip
from .hf_llava import convert_llava
from .hf_opt import convert_opt
from ..families.flamingo import convert_idefics

Converter = Callable[[dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]]

HF_CONVERTERS: dict[str, Converter] = {
    "llava": convert_llava, "opt": convert_opt, "blip-2": convert_blip2, "instructblip": convert_instructblip,
    "clip": convert_clip, "siglip": convert_siglip, "idefics": convert_idefics,
}
# What a folder of another supported architecture holds that vlmzoo cannot load yet, by model type.
UNSUPPORTED: dict[str, str] = {
    "blip": "model_type 'blip' (BLIP, the first version: a ViT with a BERT text decoder) is not supported; "
            "BLIP-2 (model_type 'blip-2') and InstructBLIP ('instructblip') are",
    "instructblipvideo": "model_type 'instructblipvideo' (InstructBLIP-Video: frames through the Q-Former) is not "
                         "supported; InstructBLIP on images (model_type 'instructblip') is",
}
