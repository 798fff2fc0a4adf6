"""A Hugging Face Llama text config and its weight names -> vlmzoo's llm kind "llama". Shared by the
converters whose language model is a Llama (LLaVA, BLIP-2 and InstructBLIP with Vicuna)."""
from __future__ import annotations

from typing import Any

from .hf_common import activation, first_id

# Defaults of transformers' LlamaConfig, for fields a config.json leaves out.
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                      attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)

# Names relative to LlamaModel (embed_tokens, layers, norm), plus the causal LM's lm_head.
LLAMA_RULES = [
    (r"^embed_tokens\.weight$", "embed_tokens.weight"),
    (r"^norm\.weight$", "norm.weight"),
    (r"^lm_head\.weight$", "lm_head.weight"),
    (r"^layers\.(\d+)\.input_layernorm\.weight$", r"layers.\1.attn_norm.weight"),
    (r"^layers\.(\d+)\.post_attention_layernorm\.weight$", r"layers.\1.mlp_norm.weight"),
    (r"^layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)$", r"layers.\1.attn.\2_proj.\3"),
    (r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)$", r"layers.\1.mlp.\2_proj.\3"),
]
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
