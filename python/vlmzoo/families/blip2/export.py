"""vlmzoo BLIP-2 / InstructBLIP (eva_vit + qformer + opt or llama) -> a Hugging Face folder that
transformers' Blip2ForConditionalGeneration / InstructBlipForConditionalGeneration loads: the inverse
of convert/hf_blip2.py and hf_blip2_parts.py.

Names follow the checkpoints transformers saves (vision_model.*, qformer.*, query_tokens,
language_projection.*, language_model.model.decoder.* for OPT, language_model.model.* for Llama,
language_model.lm_head.weight). The ViT's attention bias is written as the installed transformers
holds it: one `self_attn.qkv.bias` (q; zeros; v) from 5.0, `q_bias` / `v_bias` before."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.families.common.export import NotExportable, hf_activation as _activation, write_transformers_folder
from vlmzoo.families.common.llama import llama_hf_name, llama_text_config

_VISION_RULES = [
    (r"^vision\.class_embed$", "vision_model.embeddings.class_embedding"),
    (r"^vision\.position_embed$", "vision_model.embeddings.position_embedding"),
    (r"^vision\.patch_embed\.(weight|bias)$", r"vision_model.embeddings.patch_embedding.\1"),
    (r"^vision\.layers\.(\d+)\.norm([12])\.(weight|bias)$", r"vision_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"^vision\.layers\.(\d+)\.attn\.qkv\.weight$", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
    (r"^vision\.layers\.(\d+)\.attn\.([qv])_bias$", r"vision_model.encoder.layers.\1.self_attn.\2_bias"),
    (r"^vision\.layers\.(\d+)\.attn\.o_proj\.(weight|bias)$", r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
    (r"^vision\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"^vision\.post_norm\.(weight|bias)$", r"vision_model.post_layernorm.\1"),
]
# Q-Former layer parts: vlmzoo (csrc/nn/bert.h) -> the Q-Former's BERT names.
_QFORMER_LAYER_RULES = [
    *[(rf"^attn\.{ours}_proj\.(weight|bias)$", rf"attention.attention.{theirs}.\1")
      for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"))],
    *[(rf"^cross_attn\.{ours}_proj\.(weight|bias)$", rf"crossattention.attention.{theirs}.\1")
      for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"))],
    (r"^attn\.o_proj\.(weight|bias)$", r"attention.output.dense.\1"),
    (r"^attn_norm\.(weight|bias)$", r"attention.output.LayerNorm.\1"),
    (r"^cross_attn\.o_proj\.(weight|bias)$", r"crossattention.output.dense.\1"),
    (r"^cross_norm\.(weight|bias)$", r"crossattention.output.LayerNorm.\1"),
    (r"^ffn\.fc1\.(weight|bias)$", r"intermediate.dense.\1"),
    (r"^ffn\.fc2\.(weight|bias)$", r"output.dense.\1"),
    (r"^ffn_norm\.(weight|bias)$", r"output.LayerNorm.\1"),
    (r"^query_ffn\.fc1\.(weight|bias)$", r"intermediate_query.dense.\1"),
    (r"^query_ffn\.fc2\.(weight|bias)$", r"output_query.dense.\1"),
    (r"^query_ffn_norm\.(weight|bias)$", r"output_query.LayerNorm.\1"),
]
_OPT_RULES = [
    (r"^llm\.embed_tokens\.weight$", "language_model.model.decoder.embed_tokens.weight"),
    (r"^llm\.embed_positions\.weight$", "language_model.model.decoder.embed_positions.weight"),
    (r"^llm\.project_(in|out)\.weight$", r"language_model.model.decoder.project_\1.weight"),
    (r"^llm\.norm\.(weight|bias)$", r"language_model.model.decoder.final_layer_norm.\1"),
    (r"^llm\.lm_head\.weight$", "language_model.lm_head.weight"),
    (r"^llm\.layers\.(\d+)\.attn_norm\.(weight|bias)$", r"language_model.model.decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"^llm\.layers\.(\d+)\.mlp_norm\.(weight|bias)$", r"language_model.model.decoder.layers.\1.final_layer_norm.\2"),
    (r"^llm\.layers\.(\d+)\.attn\.([qkv])_proj\.(weight|bias)$", r"language_model.model.decoder.layers.\1.self_attn.\2_proj.\3"),
    (r"^llm\.layers\.(\d+)\.attn\.o_proj\.(weight|bias)$", r"language_model.model.decoder.layers.\1.self_attn.out_proj.\2"),
    (r"^llm\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$", r"language_model.model.decoder.layers.\1.\2.\3"),
]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' BLIP-2 / InstructBLIP: {message}")


def _text_config(llm: Mapping[str, Any]) -> dict[str, Any]:
    if llm["kind"] == "llama":
        return llama_text_config(llm)
    _require(llm["kind"] == "opt", f"llm.kind is {llm['kind']!r} (transformers' BLIP-2 here: opt or llama)")
    _require(abs(llm.get("eps", 1e-5) - 1e-5) < 1e-12, f"llm.eps is {llm.get('eps')} (OPT's layer norms use 1e-5)")
    # transformers' Blip2 projects the queries to hidden_size but embeds text at word_embed_proj_dim.
    _require(llm["word_embed_dim"] == llm["hidden"], f"llm.word_embed_dim is {llm['word_embed_dim']}, not "
             f"llm.hidden {llm['hidden']} (transformers' BLIP-2 projects the queries to the hidden size)")
    return {
        "model_type": "opt", "vocab_size": llm["vocab"], "hidden_size": llm["hidden"],
        "num_hidden_layers": llm["layers"], "num_attention_heads": llm["heads"], "ffn_dim": llm["mlp"],
        "word_embed_proj_dim": llm["word_embed_dim"], "max_position_embeddings": llm["max_positions"],
        "activation_function": _activation(llm["act"], "llm.act"), "do_layer_norm_before": True,
        "enable_bias": bool(llm.get("enable_bias", True)), "tie_word_embeddings": bool(llm.get("tie_embeddings", True)),
        "bos_token_id": llm["bos_token_id"], "eos_token_id": llm["eos_token_id"], "pad_token_id": llm["pad_token_id"],
    }


def blip2_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers Blip2Config or InstructBlipConfig dict for a resolved vlmzoo blip2-family config."""
    _require(config.get("family") == "blip2", f"family is {config.get('family')!r}, not 'blip2'")
    vision, qformer, fusion, llm = config["vision"], config["abstractor"], config["fusion"], config["llm"]
    _require(vision.get("kind") == "eva_vit", f"vision.kind is {vision.get('kind')!r} (transformers: eva_vit)")
    _require(vision.get("channels", 3) == 3, f"vision.channels is {vision.get('channels')} (transformers reads 3)")
    _require(qformer.get("kind") == "qformer", f"abstractor.kind is {qformer.get('kind')!r} (transformers: qformer)")
    _require(fusion.get("kind") == "splice", f"fusion.kind is {fusion.get('kind')!r} (transformers: splice)")
    instruct = bool(qformer["instruction"])
    _require(qformer["text_ffn"] or not instruct, "abstractor.text_ffn is false but InstructBLIP's layers hold it")
    prefix = "instructblip" if instruct else "blip_2"
    qformer_config = {
        "model_type": f"{prefix}_qformer", "vocab_size": qformer["vocab"], "hidden_size": qformer["hidden"],
        "num_hidden_layers": qformer["layers"], "num_attention_heads": qformer["heads"],
        "intermediate_size": qformer["mlp"], "hidden_act": _activation(qformer["act"], "abstractor.act"),
        "layer_norm_eps": qformer["eps"], "max_position_embeddings": qformer["max_positions"],
        "cross_attention_frequency": qformer["cross_attention_frequency"], "encoder_hidden_size": vision["hidden"],
        "pad_token_id": None if qformer["pad_token_id"] < 0 else qformer["pad_token_id"],
    }
    if not instruct:
        qformer_config["use_qformer_text_input"] = bool(qformer["text_ffn"])
    hf = {
        "architectures": ["InstructBlipForConditionalGeneration" if instruct else "Blip2ForConditionalGeneration"],
        "model_type": "instructblip" if instruct else "blip-2",
        "dtype": "float32",
        "num_query_tokens": qformer["queries"],
        "use_decoder_only_language_model": True,
        "vision_config": {
            "model_type": f"{prefix}_vision_model", "hidden_size": vision["hidden"], "intermediate_size": vision["mlp"],
            "num_hidden_layers": vision["layers"], "num_attention_heads": vision["heads"],
            "image_size": vision["image_size"], "patch_size": vision["patch_size"],
            "hidden_act": _activation(vision["act"], "vision.act"), "layer_norm_eps": vision["eps"],
            "qkv_bias": bool(vision["qkv_bias"]),
        },
        "qformer_config": qformer_config,
        "text_config": _text_config(llm),
    }
    if fusion.get("image_token_id", -1) >= 0:
        hf["image_token_index"] = fusion["image_token_id"]
    if config.get("name"):
        hf["_name_or_path"] = config["name"]
    return hf


def _first(rules: list, name: str) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def _qformer_name(name: str, instruct: bool) -> str | None:
    """Hugging Face name of a vlmzoo abstractor.* name, None if no rule knows it."""
    rest = name[len("abstractor."):]
    fixed = {"query_tokens": "query_tokens", "word_embed.weight": "qformer.embeddings.word_embeddings.weight",
             "position_embed.weight": "qformer.embeddings.position_embeddings.weight"}
    if rest in fixed:
        return fixed[rest]
    projection = re.match(r"^projection\.(weight|bias)$", rest)
    if projection:
        return f"language_projection.{projection.group(1)}"
    norm = re.match(r"^layernorm\.(weight|bias)$", rest)
    if norm:  # InstructBLIP normalises in the embeddings, BLIP-2 after them
        return f"qformer.{'embeddings.' if instruct else ''}layernorm.{norm.group(1)}"
    layer = re.match(r"^layers\.(\d+)\.(.+)$", rest)
    if not layer:
        return None
    index, inner = layer.groups()
    renamed = _first(_QFORMER_LAYER_RULES, inner)
    return f"qformer.encoder.layer.{index}.{renamed}" if renamed else None


def _fused_qkv_bias() -> bool:
    """Whether the installed transformers holds the BLIP-2 ViT's attention bias as one qkv.bias (5.0 on)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def blip2_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                        fused_qkv_bias: bool | None = None) -> dict[str, torch.Tensor]:
    """Hugging Face names for vlmzoo BLIP-2 / InstructBLIP tensors; a name no rule knows raises, naming it."""
    instruct = bool(config["abstractor"]["instruction"])
    llama = config["llm"]["kind"] == "llama"
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        if name.startswith("vision."):
            target = _first(_VISION_RULES, name)
        elif name.startswith("abstractor."):
            target = _qformer_name(name, instruct)
        else:
            target = llama_hf_name(name[len("llm."):]) if llama else _first(_OPT_RULES, name)
        if target is None:
            unknown.append(name)
        else:
            out[target] = tensor.detach().contiguous()
    if unknown:
        raise NotExportable(f"no transformers name for weights ({len(unknown)}): {', '.join(sorted(unknown))}")
    if fused_qkv_bias if fused_qkv_bias is not None else _fused_qkv_bias():
        for q_name in [k for k in out if k.endswith("self_attn.q_bias")]:
            stem = q_name[: -len("q_bias")]
            q, v = out.pop(q_name), out.pop(stem + "v_bias")
            out[stem + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])  # a key bias cancels in softmax
    if config["llm"].get("tie_embeddings"):
        out.pop("language_model.lm_head.weight", None)
    return out


def save_blip2_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo BLIP-2 or InstructBLIP) to `folder` as config.json + model.safetensors for
    transformers' Blip2ForConditionalGeneration / InstructBlipForConditionalGeneration. Tensors keep their dtype."""
    config = model.config
    return write_transformers_folder(folder, blip2_hf_config(config), blip2_hf_state_dict(model.state_dict(), config))
