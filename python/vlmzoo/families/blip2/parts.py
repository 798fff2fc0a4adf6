"""The vision and Q-Former halves of Hugging Face Blip2ForConditionalGeneration and
InstructBlipForConditionalGeneration -> vlmzoo's `eva_vit` vision and `qformer` abstractor: config
fields and weight names. The language model half is another module's (convert/hf_blip2.py).

Key layouts: transformers 4.x saves the ViT's attention biases as `self_attn.q_bias` and
`self_attn.v_bias`; 5.x saves one `self_attn.qkv.bias` [3 * hidden] whose middle (key) third is zero.
Both load. Everything else has the same names in both (vision_model.*, qformer.*, query_tokens,
language_projection.*); a leading `model.` is accepted too."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.common.bert import bert_layer_name
from vlmzoo.families.common.keys import KeyTable

# Defaults of transformers' Blip2VisionConfig / Blip2QFormerConfig (InstructBLIP's are the same), for
# fields a config.json leaves out.
_VISION_DEFAULTS = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                        image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)
_QFORMER_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512, layer_norm_eps=1e-12,
                         pad_token_id=0, cross_attention_frequency=2, use_qformer_text_input=False,
                         position_embedding_type="absolute")
_NUM_QUERY_TOKENS = 32
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def _activation(name: str, where: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"config.json {where}: activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _square(value: Any, where: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"config.json {where}: {value} is not square; eva_vit takes square images and patches")
        value = value[0]
    return int(value)


def blip2_vision_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo `eva_vit` vision config for a Blip2Config / InstructBlipConfig dict (reads hf["vision_config"])."""
    vc = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    return {
        "kind": "eva_vit",
        "image_size": _square(vc["image_size"], "vision_config.image_size"),
        "patch_size": _square(vc["patch_size"], "vision_config.patch_size"),
        "channels": 3,  # Blip2VisionEmbeddings' convolution reads 3 channels whatever the config says
        "hidden": vc["hidden_size"],
        "layers": vc["num_hidden_layers"],
        "heads": vc["num_attention_heads"],
        "mlp": vc["intermediate_size"],
        "act": _activation(vc["hidden_act"], "vision_config.hidden_act"),
        "eps": vc["layer_norm_eps"],
        "qkv_bias": bool(vc["qkv_bias"]),
    }


def qformer_config(hf: dict[str, Any], instruct: bool) -> dict[str, Any]:
    """vlmzoo `qformer` abstractor config for a Blip2Config (instruct=False) or InstructBlipConfig
    (instruct=True) dict: reads hf["qformer_config"] and hf["num_query_tokens"]."""
    qc = {**_QFORMER_DEFAULTS, **(hf.get("qformer_config") or {})}
    if qc["position_embedding_type"] != "absolute":
        raise ValueError(f"config.json qformer_config.position_embedding_type: {qc['position_embedding_type']!r} "
                         "is not supported (absolute)")
    pad = qc["pad_token_id"]
    return {
        "kind": "qformer",
        "queries": hf.get("num_query_tokens", _NUM_QUERY_TOKENS),
        "hidden": qc["hidden_size"],
        "layers": qc["num_hidden_layers"],
        "heads": qc["num_attention_heads"],
        "mlp": qc["intermediate_size"],
        "act": _activation(qc["hidden_act"], "qformer_config.hidden_act"),
        "eps": qc["layer_norm_eps"],
        "cross_attention_frequency": qc["cross_attention_frequency"],
        "vocab": qc["vocab_size"],
        "max_positions": qc["max_position_embeddings"],
        "pad_token_id": -1 if pad is None else pad,
        "instruction": bool(instruct),
        # InstructBLIP's layers always hold the text FFN; BLIP-2's only with use_qformer_text_input.
        "text_ffn": bool(instruct or qc["use_qformer_text_input"]),
    }


# Slot-relative key tables, read both ways (blip2/export.py reads them right to left).
EVA_VIT_KEYS = KeyTable([  # Blip2VisionModel, relative to vision_model.
    ("embeddings.class_embedding", "class_embed"),
    ("embeddings.position_embedding", "position_embed"),
    ("embeddings.patch_embedding.{wb}", "patch_embed.{wb}"),
    ("encoder.layers.{i}.layer_norm{n}.{wb}", "layers.{i}.norm{n}.{wb}"),
    ("encoder.layers.{i}.self_attn.qkv.weight", "layers.{i}.attn.qkv.weight"),
    ("encoder.layers.{i}.self_attn.{qv}_bias", "layers.{i}.attn.{qv}_bias"),
    ("encoder.layers.{i}.self_attn.projection.{wb}", "layers.{i}.attn.o_proj.{wb}"),
    ("encoder.layers.{i}.mlp.{fc}.{wb}", "layers.{i}.mlp.{fc}.{wb}"),
    ("post_layernorm.{wb}", "post_norm.{wb}"),
])
# The Q-Former outside its layers (common/bert.py's BERT_LAYER_KEYS are its layers). BLIP-2 normalises the
# queries in qformer.layernorm, InstructBLIP queries and text in the embeddings': both load; the way back
# picks by the config (blip2/export.py).
QFORMER_KEYS = KeyTable([
    ("query_tokens", "query_tokens"),
    ("language_projection.{wb}", "projection.{wb}"),
    ("qformer.layernorm.{wb}", "layernorm.{wb}"),
    ("qformer.embeddings.layernorm.{wb}", "layernorm.{wb}"),
    ("qformer.embeddings.word_embeddings.weight", "word_embed.weight"),
    ("qformer.embeddings.position_embeddings.weight", "position_embed.weight"),
])
_IGNORED = [r"position_ids$"]  # buffers


def _split_qkv_bias(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """5.x `self_attn.qkv.bias` [3D] -> the 4.x `q_bias`, `v_bias` [D]. The key third is dropped: a bias
    on the keys adds q.b_k to every score of a query row, which softmax cancels."""
    hidden = tensor.shape[0] // 3
    stem = name[: -len("qkv.bias")]
    return {stem + "q_bias": tensor[:hidden], stem + "v_bias": tensor[2 * hidden:]}


def _target(name: str) -> str | None:
    """vlmzoo name of a vision / Q-Former name, None when no rule knows it."""
    if name.startswith("vision_model."):
        rest = name[len("vision_model."):]
        renamed = EVA_VIT_KEYS.to_vlmzoo(rest)
        return renamed and f"vision.{renamed}"
    layer = re.match(r"^qformer\.encoder\.layer\.(\d+)\.(.+)$", name)
    if layer:
        inner = bert_layer_name(layer.group(2))
        return f"abstractor.layers.{layer.group(1)}.{inner}" if inner else None
    renamed = QFORMER_KEYS.to_vlmzoo(name)
    return renamed and f"abstractor.{renamed}"


def _is_part(name: str) -> bool:
    return name == "query_tokens" or name.startswith(("vision_model.", "qformer.", "language_projection."))


def blip2_parts_state_dict(
    hf_tensors: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, torch.Tensor]]:
    """Maps the vision and Q-Former tensors of a BLIP-2 / InstructBLIP checkpoint (either layout).
    Returns (tensors under vlmzoo vision.* / abstractor.* names, names of those parts no rule knows,
    the other tensors (language_model.*) under their Hugging Face names, for the LM's converter)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    rest: dict[str, torch.Tensor] = {}
    for original, tensor in hf_tensors.items():
        name = re.sub(r"^model\.(?=vision_model\.|qformer\.|query_tokens$|language_projection\.)", "", original)
        if not _is_part(name):
            rest[original] = tensor
            continue
        if any(re.search(p, name) for p in _IGNORED):
            continue
        pieces = _split_qkv_bias(name, tensor) if name.endswith("self_attn.qkv.bias") else {name: tensor}
        for piece, value in pieces.items():
            target = _target(piece)
            if target is None:
                unknown.append(original)
            else:
                mapped[target] = value
    return mapped, sorted(set(unknown)), rest
