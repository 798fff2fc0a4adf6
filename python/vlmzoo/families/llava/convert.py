"""Hugging Face LLaVA (CLIP or SigLIP vision + Llama text) -> vlmzoo config and weight names.
Accepts the old layout (vision_tower.vision_model.*, language_model.model.*) and the new one
(model.vision_tower.*, model.language_model.*, lm_head.*)."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.common.keys import KeyTable, activation, rename
from vlmzoo.families.common.vit import VIT_KEYS
from vlmzoo.families.common.llama import LLAMA_IGNORED, LLAMA_RULES, llama_llm_config

# Defaults of transformers' config classes, for fields a config.json leaves out.
_CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                             layer_norm_eps=1e-5)
_SIGLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                               layer_norm_eps=1e-6)

def llava_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo config dict for a transformers LlavaConfig dict."""
    vc_raw, tc_raw = hf.get("vision_config") or {}, hf.get("text_config") or {}
    vision_type = vc_raw.get("model_type", "clip_vision_model")
    if vision_type not in ("clip_vision_model", "siglip_vision_model"):
        raise ValueError(f"config.json vision_config.model_type: {vision_type!r} is not supported "
                         "(clip_vision_model, siglip_vision_model)")
    siglip = vision_type == "siglip_vision_model"
    vc = {**(_SIGLIP_VISION_DEFAULTS if siglip else _CLIP_VISION_DEFAULTS), **vc_raw}
    text_type = tc_raw.get("model_type", "llama")
    if text_type != "llama":
        raise ValueError(f"config.json text_config.model_type: {text_type!r} is not supported (llama)")
    return {
        "name": hf.get("_name_or_path") or "llava",
        "family": "llava",
        "vision": {
            "kind": "vit",
            "style": "siglip" if siglip else "clip",
            "image_size": vc["image_size"],
            "patch_size": vc["patch_size"],
            "channels": vc["num_channels"],
            "hidden": vc["hidden_size"],
            "layers": vc["num_hidden_layers"],
            "heads": vc["num_attention_heads"],
            "mlp": vc["intermediate_size"],
            "act": activation(vc["hidden_act"], "vision_config.hidden_act"),
            "eps": vc["layer_norm_eps"],
            "feature_layers": hf.get("vision_feature_layer", -2),
            "select": hf.get("vision_feature_select_strategy", "default"),
        },
        "abstractor": {"kind": "mlp", "depth": 2,
                       "act": activation(hf.get("projector_hidden_act", "gelu"), "projector_hidden_act"),
                       "bias": hf.get("multimodal_projector_bias", True)},
        "fusion": {"kind": "splice", "image_token_id": hf.get("image_token_index", hf.get("image_token_id", 32000))},
        "llm": llama_llm_config(tc_raw, hf),
    }


_VISION_RULES = VIT_KEYS
PROJECTOR_KEYS = KeyTable([("linear_1.{wb}", "layers.0.{wb}"), ("linear_2.{wb}", "layers.1.{wb}")])
_PROJECTOR_RULES = PROJECTOR_KEYS
# Buffers and heads a LLaVA never uses: dropped without complaint.
_IGNORED = [r"position_ids$", r"^vision:head\.", *LLAMA_IGNORED]


def _split_slot(name: str) -> tuple[str, str] | None:
    """('vision' | 'abstractor' | 'llm', slot-relative name) for both key layouts."""
    name = re.sub(r"^model\.(?=vision_tower|multi_modal_projector|language_model)", "", name)
    if name == "lm_head.weight" or name == "language_model.lm_head.weight":
        return "llm", "lm_head.weight"
    for prefix, slot in (("vision_tower.vision_model.", "vision"), ("vision_tower.", "vision"),
                         ("multi_modal_projector.", "abstractor"), ("language_model.model.", "llm"),
                         ("language_model.", "llm")):
        if name.startswith(prefix):
            return slot, name[len(prefix):]
    return None


def llava_state_dict(hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo names for Hugging Face LLaVA tensors; returns (mapped, names no rule knows)."""
    rules = {"vision": _VISION_RULES, "abstractor": _PROJECTOR_RULES, "llm": LLAMA_RULES}
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        split = _split_slot(name)
        if split is None:
            unknown.append(name)
            continue
        slot, rest = split
        if any(re.search(p, rest) or re.search(p, f"{slot}:{rest}") for p in _IGNORED):
            continue
        renamed = rename(rules[slot], rest)
        if renamed is None:
            unknown.append(name)
        else:
            mapped[f"{slot}.{renamed}"] = tensor
    return mapped, unknown


def convert_llava(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows)."""
    config = llava_config(hf_config)
    mapped, unknown = llava_state_dict(hf_tensors)
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown
