"""vlmzoo CLIP / SigLIP dual encoders -> a Hugging Face folder that transformers' CLIPModel /
SiglipModel loads: the inverse of convert/hf_clip.py.

Names follow the checkpoints transformers saves (vision_model.*, text_model.*, visual_projection,
text_projection, logit_scale, logit_bias). The SigLIP pooling head's q/k/v are packed back into
nn.MultiheadAttention's in_proj; CLIP's temperature is a scalar again."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.families.clip.convert import HEAD_KEYS, SLOT_PREFIXES, TEXT_KEYS, VISION_KEYS
from vlmzoo.families.common.export import NotExportable, hf_activation as _activation, write_transformers_folder

# (style, pool) each family's towers have in transformers.
_TOWER = {"clip": ("clip", "class", "clip_text"), "siglip": ("siglip", "map", "siglip_text")}


def _require(condition: bool, family: str, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' {family.upper()}: {message}")


def dual_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers CLIPConfig or SiglipConfig dict for a resolved vlmzoo clip / siglip config."""
    family = config.get("family")
    _require(family in _TOWER, str(family), f"family is {family!r} (clip or siglip)")
    vision, text, head = config["vision"], config["llm"], config["head"]
    style, pool, text_kind = _TOWER[family]
    _require(vision.get("kind") == "vit" and vision.get("style") == style, family,
             f"vision is {vision.get('kind')!r} of style {vision.get('style')!r} (transformers: vit, {style})")
    _require(vision.get("pool") == pool, family, f"vision.pool is {vision.get('pool')!r} (transformers: {pool})")
    _require(text.get("kind") == text_kind, family, f"llm.kind is {text.get('kind')!r} (transformers: {text_kind})")
    vision_config = {
        "model_type": f"{family}_vision_model", "hidden_size": vision["hidden"], "intermediate_size": vision["mlp"],
        "num_hidden_layers": vision["layers"], "num_attention_heads": vision["heads"],
        "num_channels": vision.get("channels", 3), "image_size": vision["image_size"],
        "patch_size": vision["patch_size"], "hidden_act": _activation(vision["act"], "vision.act"),
        "layer_norm_eps": vision["eps"],
    }
    text_config = {
        "model_type": f"{family}_text_model", "vocab_size": text["vocab"], "hidden_size": text["hidden"],
        "intermediate_size": text["mlp"], "num_hidden_layers": text["layers"], "num_attention_heads": text["heads"],
        "max_position_embeddings": text["max_positions"], "hidden_act": _activation(text["act"], "llm.act"),
        "layer_norm_eps": text["eps"], "bos_token_id": text["bos_token_id"], "eos_token_id": text["eos_token_id"],
        "pad_token_id": text["pad_token_id"],
    }
    hf: dict[str, Any] = {"model_type": family, "dtype": "float32", "vision_config": vision_config,
                          "text_config": text_config}
    if family == "clip":
        _require(bool(head.get("projection", True)) and not head.get("bias", False), family,
                 "head: CLIP projects both towers and has no logit bias")
        hf.update(architectures=["CLIPModel"], projection_dim=head["dim"],
                  logit_scale_init_value=head.get("logit_scale_init", 2.6592))
    else:
        _require(not head.get("projection", False) and head.get("bias", True), family,
                 "head: SigLIP has no projections and has a logit bias")
        vision_config["vision_use_head"] = True
        text_config["projection_size"] = text.get("projection", text["hidden"])
        hf["architectures"] = ["SiglipModel"]
    if config.get("name"):
        hf["_name_or_path"] = config["name"]
    return hf


def dual_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Hugging Face names for vlmzoo CLIP / SigLIP tensors; a name no rule knows raises, naming it."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, torch.Tensor]] = {"weight": {}, "bias": {}}
    unknown = []
    for name, tensor in state_dict.items():
        tensor = tensor.detach().contiguous()
        slot, rest = name.split(".", 1)
        pool_qkv = re.match(r"^pool_head\.attn\.([qkv])_proj\.(weight|bias)$", rest)
        if slot == "vision" and pool_qkv:
            packed[pool_qkv.group(2)][pool_qkv.group(1)] = tensor
            continue
        table = {"vision": VISION_KEYS, "llm": TEXT_KEYS, "head": HEAD_KEYS}.get(slot)
        target = table.to_hf(rest) if table is not None else None
        if target is None:
            unknown.append(name)
        elif slot == "head":
            # CLIP's logit_scale is a scalar, SigLIP's temperature and bias have shape [1].
            out[target] = tensor.reshape(()) if config["family"] == "clip" and rest == "logit_scale" else tensor
        else:
            out[SLOT_PREFIXES[slot] + target] = tensor
    for kind, parts in packed.items():
        if parts:
            out[f"vision_model.head.attention.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if unknown:
        raise NotExportable(f"no transformers name for weights ({len(unknown)}): {', '.join(sorted(unknown))}")
    return out


def save_dual_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo CLIP or SigLIP) to `folder` as config.json + model.safetensors for
    transformers' CLIPModel / SiglipModel. Tensors keep their dtype."""
    config = model.config
    return write_transformers_folder(folder, dual_hf_config(config), dual_hf_state_dict(model.state_dict(), config))
