"""A Hugging Face Llama text config and its weight names -> vlmzoo's llm kind "llama". Shared by the
converters whose language model is a Llama (LLaVA, BLIP-2 and InstructBLIP with Vicuna)."""
from __future__ import annotations

import re
from typing import Any

from vlmzoo.families.common.export import hf_activation
from vlmzoo.families.common.keys import KeyTable, activation, first_id

# Defaults of transformers' LlamaConfig, for fields a config.json leaves out.
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                      attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)

# Names relative to LlamaModel (embed_tokens, layers, norm), plus the causal LM's lm_head; both ways.
LLAMA_KEYS = KeyTable([
    ("embed_tokens.weight", "embed_tokens.weight"),
    ("norm.weight", "norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("layers.{i}.input_layernorm.weight", "layers.{i}.attn_norm.weight"),
    ("layers.{i}.post_attention_layernorm.weight", "layers.{i}.mlp_norm.weight"),
    ("layers.{i}.self_attn.{qkvo}_proj.{wb}", "layers.{i}.attn.{qkvo}_proj.{wb}"),
    ("layers.{i}.mlp.{gud}_proj.{wb}", "layers.{i}.mlp.{gud}_proj.{wb}"),
])
LLAMA_RULES = LLAMA_KEYS


def llama_hf_name(name: str) -> str | None:
    """The name transformers' LLaVA / BLIP-2 give an llm-relative vlmzoo Llama weight
    (language_model.model.*, language_model.lm_head.weight); None when no rule knows it."""
    hf = LLAMA_KEYS.to_hf(name)
    if hf is None:
        return None
    return f"language_model.{hf}" if hf == "lm_head.weight" else f"language_model.model.{hf}"


# Buffers a Llama checkpoint may carry that vlmzoo recomputes.
LLAMA_IGNORED = [r"rotary_emb\.inv_freq$"]


def llama_llm_config(text_config: dict[str, Any], top: dict[str, Any], where: str = "text_config") -> dict[str, Any]:
    """vlmzoo llm slot for a LlamaConfig dict. `top` is the enclosing config.json, whose
    tie_word_embeddings and pad_token_id win over the text config's (as transformers reads them)."""
    tc = {**LLAMA_DEFAULTS, **text_config}
    rope = tc.get("rope_parameters") or tc.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(f"config.json {where} rope type {rope.get('rope_type')!r} is not supported (default)")
    rope_theta = rope.get("rope_theta", tc.get("rope_theta", 10000.0))
    heads = tc["num_attention_heads"]
    vocab = tc["vocab_size"]
    tie = top.get("tie_word_embeddings", tc.get("tie_word_embeddings", False))
    return {
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
        "act": activation(tc["hidden_act"], f"{where}.hidden_act"),
        "bos_token_id": first_id(tc.get("bos_token_id"), 1) % vocab,
        "eos_token_id": first_id(tc.get("eos_token_id"), 2) % vocab,
        "pad_token_id": first_id(tc.get("pad_token_id", top.get("pad_token_id")), 0) % vocab,
    }


def llama_text_config(llm: Mapping[str, Any]) -> dict[str, Any]:
    """transformers LlamaConfig dict for vlmzoo's llm kind "llama"."""
    return {
        "model_type": "llama",
        "vocab_size": llm["vocab"], "hidden_size": llm["hidden"], "intermediate_size": llm["mlp"],
        "num_hidden_layers": llm["layers"], "num_attention_heads": llm["heads"],
        "num_key_value_heads": llm["kv_heads"], "head_dim": llm["head_dim"],
        "max_position_embeddings": llm["max_positions"], "rms_norm_eps": llm["rms_eps"],
        # Both spellings: transformers 5 reads rope_parameters, 4.x reads rope_theta.
        "rope_theta": llm["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": llm["rope_theta"]},
        "attention_bias": bool(llm.get("attention_bias", False)), "mlp_bias": bool(llm.get("mlp_bias", False)),
        "hidden_act": hf_activation(llm["act"], "llm.act"),
        "bos_token_id": llm["bos_token_id"], "eos_token_id": llm["eos_token_id"],
        "pad_token_id": llm["pad_token_id"], "tie_word_embeddings": bool(llm.get("tie_embeddings", False)),
    }


def convert_llama(hf_config: dict[str, Any], hf_tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A text-only LlamaForCausalLM / LlamaModel folder: (vlmzoo config whose llm slot is the Llama, tensors
    under vlmzoo names, unknown names). Loads as a whole text-only model (vision "none", family llava), as plain
    OPT folders do, and lends the llm slot ({"from": FOLDER})."""
    config = {"name": hf_config.get("_name_or_path") or "llama", "family": "llava", "vision": {"kind": "none"},
              "abstractor": {"kind": "identity"}, "fusion": {"kind": "splice", "image_token_id": -1},
              "llm": llama_llm_config(hf_config, hf_config, where="config.json")}
    mapped: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        rest = name[len("model."):] if name.startswith("model.") else name
        if any(re.search(p, rest) for p in LLAMA_IGNORED):
            continue
        renamed = LLAMA_KEYS.to_vlmzoo(rest)
        if renamed is None:
            unknown.append(name)
        else:
            mapped[f"llm.{renamed}"] = tensor
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown
