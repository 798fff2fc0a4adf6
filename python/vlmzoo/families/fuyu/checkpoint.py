"""Hugging Face Fuyu (FuyuForCausalLM: a patch projection into a Persimmon decoder) <-> vlmzoo, both ways
from one key table.

Loading reads both layouts transformers has saved: the published one (adept/fuyu-8b, transformers 4.x:
vision_embed_tokens.*, language_model.model.*, language_model.lm_head.weight) and 5.x's
(model.vision_embed_tokens.*, model.language_model.*, lm_head.weight); its config.json may hold the text
fields flat (the published file) or in text_config. Export writes the published layout, which
transformers 4.x and 5.x both load."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.families.common.export import NotExportable, write_transformers_folder
from vlmzoo.families.common.keys import activation, first_id

# (vlmzoo name, Hugging Face name in the published layout); {i} is a layer index, {p} weight or bias.
_LAYER, _HF_LAYER = "llm.layers.{i}.", "language_model.model.layers.{i}."
KEY_TABLE = [
    ("vision.proj.{p}", "vision_embed_tokens.{p}"),
    ("llm.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
    ("llm.norm.{p}", "language_model.model.final_layernorm.{p}"),
    ("llm.lm_head.weight", "language_model.lm_head.weight"),
    (_LAYER + "attn_norm.{p}", _HF_LAYER + "input_layernorm.{p}"),
    (_LAYER + "mlp_norm.{p}", _HF_LAYER + "post_attention_layernorm.{p}"),
    (_LAYER + "attn.qkv.{p}", _HF_LAYER + "self_attn.query_key_value.{p}"),
    (_LAYER + "attn.o_proj.{p}", _HF_LAYER + "self_attn.dense.{p}"),
    (_LAYER + "attn.q_norm.{p}", _HF_LAYER + "self_attn.q_layernorm.{p}"),
    (_LAYER + "attn.k_norm.{p}", _HF_LAYER + "self_attn.k_layernorm.{p}"),
    (_LAYER + "mlp.fc1.{p}", _HF_LAYER + "mlp.dense_h_to_4h.{p}"),
    (_LAYER + "mlp.fc2.{p}", _HF_LAYER + "mlp.dense_4h_to_h.{p}"),
]
# Buffers a checkpoint may carry that vlmzoo recomputes.
_IGNORED = [r"rotary_emb\.(inv_freq|original_inv_freq)$"]


def _regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(pattern + "$")


_FROM_OURS = [(_regex(ours), theirs) for ours, theirs in KEY_TABLE]
_FROM_HF = [(_regex(theirs), ours) for ours, theirs in KEY_TABLE]


def _translate(name: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in table:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return None


def _hf_published_name(name: str) -> str:
    """A 5.x name in the published layout (model.vision_embed_tokens -> vision_embed_tokens, ...)."""
    if name == "lm_head.weight":
        return "language_model.lm_head.weight"
    name = re.sub(r"^model\.language_model\.", "language_model.model.", name)
    return re.sub(r"^model\.vision_embed_tokens\.", "vision_embed_tokens.", name)


# ---- config
_TEXT_DEFAULTS = dict(vocab_size=262144, hidden_size=4096, intermediate_size=16384, num_hidden_layers=36,
                      num_attention_heads=64, hidden_act="relu2", max_position_embeddings=16384, layer_norm_eps=1e-5,
                      qk_layernorm=True, bos_token_id=1, eos_token_id=2, pad_token_id=None)


def fuyu_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo config dict for a transformers FuyuConfig dict (text fields flat or in text_config)."""
    nested = isinstance(hf.get("text_config"), dict)
    tc = {**_TEXT_DEFAULTS, **(hf["text_config"] if nested else hf)}
    text_type = tc.get("model_type", "persimmon") if nested else "persimmon"
    if text_type != "persimmon":
        raise ValueError(f"config.json text_config.model_type: {text_type!r} is not supported (persimmon)")
    rope = tc.get("rope_parameters") or tc.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(f"config.json rope type {rope.get('rope_type', rope.get('type'))!r} is not supported (default)")
    # FuyuConfig's default theta is 25000 (the published file's); a nested PersimmonConfig's is 10000.
    theta = rope.get("rope_theta", tc.get("rope_theta", hf.get("rope_theta", 10000.0 if nested else 25000.0)))
    fraction = rope.get("partial_rotary_factor", tc.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5)))
    vocab = tc["vocab_size"]
    tie = hf.get("tie_word_embeddings", tc.get("tie_word_embeddings", False))
    where = "text_config" if nested else "config.json"
    return {
        "name": hf.get("_name_or_path") or "fuyu",
        "family": "fuyu",
        "vision": {"kind": "patch_linear", "image_size": hf.get("image_size", 300), "patch_size": hf.get("patch_size", 30),
                   "channels": hf.get("num_channels", 3)},
        "abstractor": {"kind": "identity"},
        "fusion": {"kind": "splice", "image_token_id": hf.get("image_token_id", 71011)},
        "llm": {
            "kind": "persimmon", "vocab": vocab, "hidden": tc["hidden_size"], "layers": tc["num_hidden_layers"],
            "heads": tc["num_attention_heads"], "mlp": tc["intermediate_size"],
            "max_positions": tc["max_position_embeddings"], "rope_theta": float(theta),
            "rotary_fraction": float(fraction), "eps": tc["layer_norm_eps"], "qk_norm": bool(tc["qk_layernorm"]),
            "act": activation(tc["hidden_act"], f"{where}.hidden_act"), "tie_embeddings": bool(tie),
            "bos_token_id": first_id(tc.get("bos_token_id"), 1) % vocab,
            "eos_token_id": first_id(tc.get("eos_token_id"), 2) % vocab,
            "pad_token_id": first_id(tc.get("pad_token_id", hf.get("pad_token_id")), 0) % vocab,
        },
    }


def fuyu_state_dict(hf_tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo names for Hugging Face Fuyu tensors (either layout); returns (mapped, names no rule knows)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        if any(re.search(p, name) for p in _IGNORED):
            continue
        ours = _translate(_hf_published_name(name), _FROM_HF)
        if ours is None:
            unknown.append(name)
        else:
            mapped[ours] = tensor
    return mapped, unknown


def convert_fuyu(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows)."""
    config = fuyu_config(hf_config)
    mapped, unknown = fuyu_state_dict(hf_tensors)
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown


# ---- export
_HF_ACTIVATIONS = {"relu2": "relu2", "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu",
                   "quick_gelu": "quick_gelu"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' Fuyu: {message}")


def fuyu_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers FuyuConfig dict (text fields in text_config) for a resolved vlmzoo Fuyu config."""
    vision, abstractor, fusion, llm = (config[s] for s in ("vision", "abstractor", "fusion", "llm"))
    _require(vision.get("kind") == "patch_linear", f"vision.kind is {vision.get('kind')!r} (patch_linear)")
    _require(abstractor.get("kind") == "identity", f"abstractor.kind is {abstractor.get('kind')!r} (identity)")
    _require(fusion.get("kind") == "splice", f"fusion.kind is {fusion.get('kind')!r} (splice)")
    _require(llm.get("kind") == "persimmon", f"llm.kind is {llm.get('kind')!r} (persimmon)")
    _require(llm["act"] in _HF_ACTIVATIONS, f"llm.act {llm['act']!r} has no transformers name")
    tie = bool(llm.get("tie_embeddings", False))
    hf = {
        "architectures": ["FuyuForCausalLM"], "model_type": "fuyu", "dtype": "float32",
        "image_size": vision["image_size"], "patch_size": vision["patch_size"], "num_channels": vision["channels"],
        "image_token_id": fusion["image_token_id"], "tie_word_embeddings": tie,
        "text_config": {
            "model_type": "persimmon", "vocab_size": llm["vocab"], "hidden_size": llm["hidden"],
            "intermediate_size": llm["mlp"], "num_hidden_layers": llm["layers"], "num_attention_heads": llm["heads"],
            "hidden_act": _HF_ACTIVATIONS[llm["act"]], "max_position_embeddings": llm["max_positions"],
            "layer_norm_eps": llm["eps"], "qk_layernorm": bool(llm["qk_norm"]),
            # Both spellings: transformers 5 reads rope_parameters, 4.x the flat fields.
            "rope_theta": llm["rope_theta"], "partial_rotary_factor": llm["rotary_fraction"],
            "rope_parameters": {"rope_type": "default", "rope_theta": llm["rope_theta"],
                                "partial_rotary_factor": llm["rotary_fraction"]},
            "bos_token_id": llm["bos_token_id"], "eos_token_id": llm["eos_token_id"],
            "pad_token_id": llm["pad_token_id"], "tie_word_embeddings": tie,
        },
    }
    if config.get("name"):
        hf["_name_or_path"] = config["name"]
    return hf


def fuyu_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face names (published layout) for vlmzoo Fuyu tensors; a name no rule knows raises, naming it."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        theirs = _translate(name, _FROM_OURS)
        if theirs is None:
            unknown.append(name)
        else:
            out[theirs] = tensor.detach().contiguous()
    if unknown:
        raise NotExportable(f"no transformers name for weights ({len(unknown)}): {', '.join(sorted(unknown))}")
    return out


def save_fuyu_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo Fuyu) to `folder` for transformers' FuyuForCausalLM.from_pretrained."""
    config = model.config
    return write_transformers_folder(folder, fuyu_hf_config(config), fuyu_hf_state_dict(model.state_dict()))
