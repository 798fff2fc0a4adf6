"""Hugging Face BERT layer and encoder names -> vlmzoo's (csrc/nn/bert.h). The layer rules serve the
BLIP-2 / InstructBLIP Q-Former (its layers are BERT layers) and a plain BertModel alike."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.common.keys import KeyTable, activation

# Layer-relative BERT names <-> vlmzoo's, both ways. The Q-Former calls the attention `attention.attention`,
# BertModel `attention.self`: both load, and the way back writes the Q-Former's (it comes first).
_PROJECTIONS = (("query", "q"), ("key", "k"), ("value", "v"))
BERT_LAYER_KEYS = KeyTable([
    *[(f"{block}.{spelling}.{theirs}.{{wb}}", f"{ours_block}.{ours}_proj.{{wb}}")
      for spelling in ("attention", "self")
      for block, ours_block in (("attention", "attn"), ("crossattention", "cross_attn"))
      for theirs, ours in _PROJECTIONS],
    ("attention.output.dense.{wb}", "attn.o_proj.{wb}"),
    ("attention.output.LayerNorm.{wb}", "attn_norm.{wb}"),
    ("crossattention.output.dense.{wb}", "cross_attn.o_proj.{wb}"),
    ("crossattention.output.LayerNorm.{wb}", "cross_norm.{wb}"),
    ("intermediate.dense.{wb}", "ffn.fc1.{wb}"),
    ("output.dense.{wb}", "ffn.fc2.{wb}"),
    ("output.LayerNorm.{wb}", "ffn_norm.{wb}"),
    ("intermediate_query.dense.{wb}", "query_ffn.fc1.{wb}"),
    ("output_query.dense.{wb}", "query_ffn.fc2.{wb}"),
    ("output_query.LayerNorm.{wb}", "query_ffn_norm.{wb}"),
])


def bert_layer_name(rest: str) -> str | None:
    """vlmzoo name of a layer-relative BERT name ("attention.output.dense.weight" -> "attn.o_proj.weight")."""
    return BERT_LAYER_KEYS.to_vlmzoo(rest)


# BertModel (nn::BertEncoder): embeddings, then encoder.layer.i.
_ENCODER_RULES = [
    (r"^embeddings\.word_embeddings\.weight$", "word_embed.weight"),
    (r"^embeddings\.position_embeddings\.weight$", "position_embed.weight"),
    (r"^embeddings\.token_type_embeddings\.weight$", "token_type_embed.weight"),
    (r"^embeddings\.LayerNorm\.(weight|bias)$", r"embed_norm.\1"),
]
# A BertModel checkpoint's buffers and the pooler, which last_hidden_state does not use.
_ENCODER_IGNORED = [r"^embeddings\.position_ids$", r"^pooler\."]


def bert_encoder_state_dict(hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo BertEncoder names for a BertModel's tensors (with or without the `bert.` prefix);
    returns (mapped, names no rule knows)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in hf_tensors.items():
        rest = re.sub(r"^bert\.", "", name)
        if any(re.match(p, rest) for p in _ENCODER_IGNORED):
            continue
        layer = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", rest)
        target = None
        if layer:
            inner = bert_layer_name(layer.group(2))
            target = f"layers.{layer.group(1)}.{inner}" if inner else None
        else:
            target = next((re.sub(p, r, rest) for p, r in _ENCODER_RULES if re.match(p, rest)), None)
        if target is None:
            unknown.append(name)
        else:
            mapped[target] = tensor
    return mapped, unknown


# What a Q-Former holds that a BERT has no weights for: they keep the host's initialisation (BLIP-2 drew
# the cross-attention and the queries fresh, and copied BERT's FFN into the queries' FFN, as here).
QFORMER_BEYOND_BERT = [r"^abstractor\.query_tokens$", r"^abstractor\.layers\.\d+\.cross_(attn|norm)\.",
                       r"^abstractor\.projection\."]


def convert_bert_as_qformer(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]
                            ) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """A BertModel folder read as a Q-Former's initial weights ({"from": FOLDER} in an abstractor slot): its
    widths and depth become the Q-Former's, its layers the Q-Former's self-attention and FFNs (the text FFN and
    the queries' FFN alike), its embeddings' LayerNorm the Q-Former's. The queries, cross-attention and
    projection are left to the host (QFORMER_BEYOND_BERT)."""
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"config.json position_embedding_type: {hf_config['position_embedding_type']!r} is not "
                         "supported (absolute)")
    pad = hf_config.get("pad_token_id", 0)
    qformer = {"kind": "qformer", "hidden": hf_config["hidden_size"], "layers": hf_config["num_hidden_layers"],
               "heads": hf_config["num_attention_heads"], "mlp": hf_config["intermediate_size"],
               "act": activation(hf_config.get("hidden_act", "gelu"), "config.json hidden_act"),
               "eps": hf_config.get("layer_norm_eps", 1e-12), "vocab": hf_config["vocab_size"],
               "max_positions": hf_config.get("max_position_embeddings", 512),
               "pad_token_id": -1 if pad is None else pad}
    config = {"name": hf_config.get("_name_or_path") or "bert", "family": "blip2", "abstractor": qformer}
    encoder, unknown = bert_encoder_state_dict(hf_tensors)
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in encoder.items():
        if name.startswith("layers."):
            mapped[f"abstractor.{name}"] = tensor
            query = re.sub(r"^(layers\.\d+\.)ffn(_norm)?\.", r"\1query_ffn\2.", name)
            if query != name:
                mapped[f"abstractor.{query}"] = tensor
        elif name.startswith("embed_norm."):
            mapped[f"abstractor.layernorm.{name.split('.', 1)[1]}"] = tensor
        elif name in ("word_embed.weight", "position_embed.weight"):
            mapped[f"abstractor.{name}"] = tensor
    return config, mapped, unknown


# slot -> the parameters a part converter's source leaves to the host's initialisation, by model type.
BEYOND = {"bert": {"abstractor": QFORMER_BEYOND_BERT}}
