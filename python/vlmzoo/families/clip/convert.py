"""Hugging Face CLIPModel (model_type "clip") and SiglipModel ("siglip") -> vlmzoo config and weight
names. Both are dual encoders: vision tower pooled (CLIP: class token; SigLIP: attention-pooling
head), text tower in the llm slot (clip_text / siglip_text), projections and temperature in the
contrastive head."""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from vlmzoo.families.common.keys import ACTIVATIONS as _ACTIVATIONS, KeyTable, activation as _activation, first_id as _first_id
from vlmzoo.families.common.vit import ENCODER_LAYER_KEYS, VIT_KEYS

# Defaults of transformers' config classes (CLIPTextConfig, CLIPVisionConfig, SiglipTextConfig,
# SiglipVisionConfig, CLIPConfig), for fields a config.json leaves out.
_CLIP_TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                  pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
_CLIP_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_SIGLIP_TEXT = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                    layer_norm_eps=1e-6, pad_token_id=1, bos_token_id=49406, eos_token_id=49407, projection_size=None)
_SIGLIP_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                      layer_norm_eps=1e-6, vision_use_head=True)
assert set(_ACTIVATIONS)  # the activation table is shared with the LLaVA converter


def _vision(vc: dict[str, Any], siglip: bool) -> dict[str, Any]:
    return {
        "kind": "vit", "style": "siglip" if siglip else "clip",
        "image_size": vc["image_size"], "patch_size": vc["patch_size"], "channels": vc["num_channels"],
        "hidden": vc["hidden_size"], "layers": vc["num_hidden_layers"], "heads": vc["num_attention_heads"],
        "mlp": vc["intermediate_size"], "act": _activation(vc["hidden_act"], "vision_config.hidden_act"),
        "eps": vc["layer_norm_eps"], "feature_layers": -1, "select": "full", "pool": "map" if siglip else "class",
    }


def _text(tc: dict[str, Any], kind: str) -> dict[str, Any]:
    out = {
        "kind": kind, "vocab": tc["vocab_size"], "hidden": tc["hidden_size"], "layers": tc["num_hidden_layers"],
        "heads": tc["num_attention_heads"], "mlp": tc["intermediate_size"],
        "max_positions": tc["max_position_embeddings"], "act": _activation(tc["hidden_act"], "text_config.hidden_act"),
        "eps": tc["layer_norm_eps"], "bos_token_id": _first_id(tc.get("bos_token_id"), 49406),
        "eos_token_id": _first_id(tc.get("eos_token_id"), 49407), "pad_token_id": _first_id(tc.get("pad_token_id"), 1),
    }
    if kind == "siglip_text":
        out["projection"] = tc.get("projection_size") or tc["hidden_size"]
    return out


def clip_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo config dict for a transformers CLIPConfig dict."""
    vc = {**_CLIP_VISION, **(hf.get("vision_config") or {})}
    tc = {**_CLIP_TEXT, **(hf.get("text_config") or {})}
    return {
        "name": hf.get("_name_or_path") or "clip", "family": "clip",
        "vision": _vision(vc, siglip=False), "llm": _text(tc, "clip_text"),
        "head": {"kind": "contrastive", "projection": True, "dim": hf.get("projection_dim") or 512,
                 "logit_scale_init": float(hf.get("logit_scale_init_value", 2.6592)), "bias": False,
                 "loss": "softmax"},
    }


def siglip_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo config dict for a transformers SiglipConfig dict."""
    vc = {**_SIGLIP_VISION, **(hf.get("vision_config") or {})}
    tc = {**_SIGLIP_TEXT, **(hf.get("text_config") or {})}
    if not vc["vision_use_head"]:
        raise ValueError("config.json vision_config.vision_use_head: false is not supported (SiglipModel pools "
                         "images with the attention-pooling head)")
    text = _text(tc, "siglip_text")
    vision = _vision(vc, siglip=True)
    if text["projection"] != vision["hidden"]:
        raise ValueError(f"config.json: text_config.projection_size {text['projection']} differs from "
                         f"vision_config.hidden_size {vision['hidden']}; SiglipModel compares them directly")
    return {
        "name": hf.get("_name_or_path") or "siglip", "family": "siglip", "vision": vision, "llm": text,
        "head": {"kind": "contrastive", "projection": False, "logit_scale_init": math.log(10.0), "bias": True,
                 "logit_bias_init": -10.0, "loss": "sigmoid"},
    }


# Slot-relative key tables, read both ways (clip/export.py reads them right to left); the vision tower's
# embeddings and both towers' encoder layers are common/vit.py's.
POOL_KEYS = KeyTable([  # SigLIP's attention-pooling head; its packed in_proj is split apart in dual_state_dict
    ("head.probe", "pool_head.probe"),
    ("head.attention.out_proj.{wb}", "pool_head.attn.o_proj.{wb}"),
    ("head.layernorm.{wb}", "pool_head.norm.{wb}"),
    ("head.mlp.{fc}.{wb}", "pool_head.mlp.{fc}.{wb}"),
])
VISION_KEYS = POOL_KEYS + VIT_KEYS
TEXT_KEYS = KeyTable([
    ("embeddings.token_embedding.weight", "token_embed.weight"),
    ("embeddings.position_embedding.weight", "position_embed.weight"),
    ("final_layer_norm.{wb}", "final_norm.{wb}"),
    ("head.{wb}", "head.{wb}"),
]) + ENCODER_LAYER_KEYS
HEAD_KEYS = KeyTable([(name, name) for name in ("visual_projection.weight", "text_projection.weight", "logit_scale",
                                                "logit_bias")])
# Where each slot's weights sit in CLIPModel / SiglipModel.
SLOT_PREFIXES = {"vision": "vision_model.", "llm": "text_model.", "head": ""}
_IGNORED = [r"position_ids$"]


def _split_slot(name: str) -> tuple[str, str]:
    for slot, prefix in SLOT_PREFIXES.items():
        if prefix and name.startswith(prefix):
            return slot, name[len(prefix):]
    return "head", name


def dual_state_dict(hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo names for CLIPModel / SiglipModel tensors; returns (mapped, names no rule knows).
    The MAP head's packed in_proj (q; k; v rows) is split; scalar temperatures become [1]."""
    tables = {"vision": VISION_KEYS, "llm": TEXT_KEYS, "head": HEAD_KEYS}
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        slot, rest = _split_slot(name)
        if any(re.search(p, rest) for p in _IGNORED):
            continue
        packed = re.match(r"^head\.attention\.in_proj_(weight|bias)$", rest)
        if slot == "vision" and packed:
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                mapped[f"vision.pool_head.attn.{part}_proj.{packed.group(1)}"] = chunk.contiguous()
            continue
        target = tables[slot].to_vlmzoo(rest)
        if target is None:
            unknown.append(name)
        else:
            mapped[f"{slot}.{target}"] = tensor.reshape(1) if slot == "head" and rest.startswith("logit_") else tensor
    return mapped, unknown


def convert_clip(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows) for a CLIPModel."""
    mapped, unknown = dual_state_dict(hf_tensors)
    return clip_config(hf_config), mapped, unknown


def convert_siglip(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows) for a SiglipModel."""
    mapped, unknown = dual_state_dict(hf_tensors)
    return siglip_config(hf_config), mapped, unknown
