"""A Hugging Face OPT (OPTForCausalLM) config and its weight names -> vlmzoo's llm kind "opt".
Used for plain `opt` folders (a text-only model: vision "none") and for BLIP-2's language_model."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.common.keys import activation, first_id, rename

# Defaults of transformers' OPTConfig, for fields a config.json leaves out.
OPT_DEFAULTS = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                    max_position_embeddings=2048, do_layer_norm_before=True, _remove_final_layer_norm=False,
                    word_embed_proj_dim=None, activation_function="relu", enable_bias=True,
                    layer_norm_elementwise_affine=True, tie_word_embeddings=True, bos_token_id=2, eos_token_id=2,
                    pad_token_id=1)

# Names relative to OPTDecoder (embed_tokens, layers, final_layer_norm, ...), plus the causal LM's lm_head.
OPT_RULES = [
    (r"^embed_tokens\.weight$", "embed_tokens.weight"),
    (r"^embed_positions\.weight$", "embed_positions.weight"),
    (r"^project_(in|out)\.weight$", r"project_\1.weight"),
    (r"^final_layer_norm\.(weight|bias)$", r"norm.\1"),
    (r"^lm_head\.weight$", "lm_head.weight"),
    (r"^layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"layers.\1.attn_norm.\2"),
    (r"^layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"layers.\1.mlp_norm.\2"),
    (r"^layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", r"layers.\1.attn.\2_proj.\3"),
    (r"^layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$", r"layers.\1.attn.o_proj.\2"),
    (r"^layers\.(\d+)\.(fc[12])\.(weight|bias)$", r"layers.\1.mlp.\2.\3"),
]


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
