"""A Hugging Face OPT (OPTForCausalLM) config and its weight names -> vlmzoo's llm kind "opt".
Used for plain `opt` folders (a text-only model: vision "none") and for BLIP-2's language_model."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.common.keys import KeyTable, activation, first_id, rename

# Defaults of transformers' OPTConfig, for fields a config.json leaves out.
OPT_DEFAULTS = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                    max_position_embeddings=2048, do_layer_norm_before=True, _remove_final_layer_norm=False,
                    word_embed_proj_dim=None, activation_function="relu", enable_bias=True,
                    layer_norm_elementwise_affine=True, tie_word_embeddings=True, bos_token_id=2, eos_token_id=2,
                    pad_token_id=1)

# Names relative to OPTDecoder (embed_tokens, layers, final_layer_norm, ...), plus the causal LM's lm_head; both ways.
OPT_KEYS = KeyTable([
    ("embed_tokens.weight", "embed_tokens.weight"),
    ("embed_positions.weight", "embed_positions.weight"),
    ("project_{io}.weight", "project_{io}.weight"),
    ("final_layer_norm.{wb}", "norm.{wb}"),
    ("lm_head.weight", "lm_head.weight"),
    ("layers.{i}.self_attn_layer_norm.{wb}", "layers.{i}.attn_norm.{wb}"),
    ("layers.{i}.final_layer_norm.{wb}", "layers.{i}.mlp_norm.{wb}"),
    ("layers.{i}.self_attn.{qkv}_proj.{wb}", "layers.{i}.attn.{qkv}_proj.{wb}"),
    ("layers.{i}.self_attn.out_proj.{wb}", "layers.{i}.attn.o_proj.{wb}"),
    ("layers.{i}.{fc}.{wb}", "layers.{i}.mlp.{fc}.{wb}"),
])
OPT_RULES = OPT_KEYS


def opt_hf_name(name: str) -> str | None:
    """The name transformers' BLIP-2 gives an llm-relative vlmzoo OPT weight (language_model.model.decoder.*,
    language_model.lm_head.weight); None when no rule knows it."""
    hf = OPT_KEYS.to_hf(name)
    if hf is None:
        return None
    return f"language_model.{hf}" if hf == "lm_head.weight" else f"language_model.model.decoder.{hf}"


def opt_llm_config(text_config: dict[str, Any], where: str = "") -> dict[str, Any]:
    """vlmzoo llm slot for an OPTConfig dict; `where` is its key inside config.json ("text_config"), for errors."""
    tc = {**OPT_DEFAULTS, **text_config}
    field = lambda key: f"config.json {where + '.' if where else ''}{key}"  # noqa: E731
    if not tc["do_layer_norm_before"]:
        raise ValueError(f"{field('do_layer_norm_before')}: false (post-LN OPT, as facebook/opt-350m) is not supported; "
                         "llm kind \"opt\" is the pre-LN decoder of every other OPT size")
    if tc["_remove_final_layer_norm"]:
        raise ValueError(f"{field('_remove_final_layer_norm')}: true (a pre-4.20 fine-tune without the final layer norm) "
                         "is not supported")
    if not tc["layer_norm_elementwise_affine"]:
        raise ValueError(f"{field('layer_norm_elementwise_affine')}: false (layer norms without weights) is not supported")
    vocab = tc["vocab_size"]
    return {
        "kind": "opt",
        "vocab": vocab,
        "hidden": tc["hidden_size"],
        "layers": tc["num_hidden_layers"],
        "heads": tc["num_attention_heads"],
        "mlp": tc["ffn_dim"],
        "word_embed_dim": tc["word_embed_proj_dim"] or tc["hidden_size"],
        "max_positions": tc["max_position_embeddings"],
        "act": activation(tc["activation_function"], field("activation_function")),
        "eps": 1e-5,  # OPT's layer norms are torch.nn.LayerNorm with its default eps
        "tie_embeddings": bool(tc["tie_word_embeddings"]),
        "enable_bias": bool(tc["enable_bias"]),
        "bos_token_id": first_id(tc["bos_token_id"], 2) % vocab,
        "eos_token_id": first_id(tc["eos_token_id"], 2) % vocab,
        "pad_token_id": first_id(tc["pad_token_id"], 1) % vocab,
    }


def opt_relative_name(name: str) -> str | None:
    """The OPTDecoder-relative name of an OPTForCausalLM weight (model.decoder.*, or decoder.* as
    OPTModel folders save it; lm_head.weight stays), or None for a name outside the decoder."""
    if name == "lm_head.weight":
        return name
    match = re.match(r"^(?:model\.)?decoder\.(.+)$", name)
    return match.group(1) if match else None


def convert_opt(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """A text-only OPT: (vlmzoo config with vision "none", tensors under vlmzoo names, unknown names)."""
    llm = opt_llm_config(hf_config)
    config = {"name": hf_config.get("_name_or_path") or "opt", "family": "blip2", "vision": {"kind": "none"},
              "abstractor": {"kind": "identity"}, "fusion": {"kind": "splice", "image_token_id": -1}, "llm": llm}
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        rest = opt_relative_name(name)
        renamed = rename(OPT_RULES, rest) if rest is not None else None
        if renamed is None:
            unknown.append(name)
        else:
            mapped[f"llm.{renamed}"] = tensor
    if llm["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown
