"""Hugging Face LLaVA (CLIP or SigLIP vision + Llama text) -> vlmzoo config and weight names.
Accepts the old layout (vision_tower.vision_model.*, language_model.model.*) and the new one
(model.vision_tower.*, model.language_model.*, lm_head.*)."""
from __future__ import annotations

import re
from typing import Any

import torch

# Defaults of transformers' config classes, for fields a config.json leaves out.
_CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                             layer_norm_eps=1e-5)
_SIGLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                               layer_norm_eps=1e-6)
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                       attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)
_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                "silu": "silu", "swish": "silu", "relu": "relu", "relu2": "relu2"}


def _activation(name: str, where: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _first_id(value: Any, fallback: int) -> int:
    if value is None:
        return fallback
    return int(value[0] if isinstance(value, list) else value)


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
    tc = {**_LLAMA_DEFAULTS, **tc_raw}
    rope = tc.get("rope_parameters") or tc.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(f"config.json text_config rope type {rope.get('rope_type')!r} is not supported (default)")
    rope_theta = rope.get("rope_theta", tc.get("rope_theta", 10000.0))
    heads = tc["num_attention_heads"]
    vocab = tc["vocab_size"]
    tie = hf.get("tie_word_embeddings", tc.get("tie_word_embeddings", False))
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
            "act": _activation(vc["hidden_act"], "vision_config.hidden_act"),
            "eps": vc["layer_norm_eps"],
            "feature_layers": hf.get("vision_feature_layer", -2),
            "select": hf.get("vision_feature_select_strategy", "default"),
        },
        "abstractor": {"kind": "mlp", "depth": 2,
                       "act": _activation(hf.get("projector_hidden_act", "gelu"), "projector_hidden_act"),
                       "bias": hf.get("multimodal_projector_bias", True)},
        "fusion": {"kind": "splice", "image_token_id": hf.get("image_token_index", hf.get("image_token_id", 32000))},
        "llm": {
            "kind": "llama",
            "vocab": vocab,
            "hidden": tc["hidden_size"],
            "layers": tc["num_hidden_layers"],
            "heads": heads,
            "kv_heads": tc.get("num_key_value_heads") or heads,
            "head_dim": tc.get("head_dim") or tc["hidden_size"] // heads,
            "mlp": tc["intermediate_size"],
            "rope_theta": float(rope_theta),
            "rms_eps": tc["rms_norm_eps"],
            "tie_embeddings": bool(tie),
            "max_positions": tc["max_position_embeddings"],
            "attention_bias": tc["attention_bias"],
            "mlp_bias": tc["mlp_bias"],
            "act": _activation(tc["hidden_act"], "text_config.hidden_act"),
            "bos_token_id": _first_id(tc.get("bos_token_id"), 1) % vocab,
            "eos_token_id": _first_id(tc.get("eos_token_id"), 2) % vocab,
            "pad_token_id": _first_id(tc.get("pad_token_id", hf.get("pad_token_id")), 0) % vocab,
        },
    }


# (pattern over the slot-relative Hugging Face name, replacement) applied in order; first match wins.
_VISION_RULES = [
    (r"^embeddings\.class_embedding$", "class_embed"),
    (r"^embeddings\.patch_embedding\.(weight|bias)$", r"patch_embed.\1"),
    (r"^embeddings\.position_embedding\.weight$", "position_embed.weight"),
    (r"^pre_layrnorm\.(weight|bias)$", r"pre_norm.\1"),
    (r"^post_layernorm\.(weight|bias)$", r"post_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)$", r"layers.\1.norm\2.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$", r"layers.\1.attn.\2_proj.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$", r"layers.\1.attn.o_proj.\2"),
    (r"^encoder\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$", r"layers.\1.mlp.\2.\3"),
]
_PROJECTOR_RULES = [(r"^linear_1\.(weight|bias)$", r"layers.0.\1"), (r"^linear_2\.(weight|bias)$", r"layers.1.\1")]
_LLM_RULES = [
    (r"^embed_tokens\.weight$", "embed_tokens.weight"),
    (r"^norm\.weight$", "norm.weight"),
    (r"^lm_head\.weight$", "lm_head.weight"),
    (r"^layers\.(\d+)\.input_layernorm\.weight$", r"layers.\1.attn_norm.weight"),
    (r"^layers\.(\d+)\.post_attention_layernorm\.weight$", r"layers.\1.mlp_norm.weight"),
    (r"^layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)$", r"layers.\1.attn.\2_proj.\3"),
    (r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)$", r"layers.\1.mlp.\2_proj.\3"),
]
# Buffers and heads a LLaVA never uses: dropped without complaint.
_IGNORED = [r"position_ids$", r"rotary_emb\.inv_freq$", r"^vision:head\."]


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
    rules = {"vision": _VISION_RULES, "abstractor": _PROJECTOR_RULES, "llm": _LLM_RULES}
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
        for pattern, replacement in rules[slot]:
            if re.match(pattern, rest):
                mapped[f"{slot}.{re.sub(pattern, replacement, rest)}"] = tensor
                break
        else:
            unknown.append(name)
    return mapped, unknown


def convert_llava(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows)."""
    config = llava_config(hf_config)
    mapped, unknown = llava_state_dict(hf_tensors)
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown
