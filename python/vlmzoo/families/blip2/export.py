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
from vlmzoo.families.blip2.parts import EVA_VIT_KEYS, QFORMER_KEYS
from vlmzoo.families.common.bert import BERT_LAYER_KEYS
from vlmzoo.families.common.llama import llama_hf_name, llama_text_config
from vlmzoo.families.common.opt import opt_hf_name

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


def _qformer_name(name: str, instruct: bool) -> str | None:
    """Hugging Face name of a vlmzoo abstractor.* name, None if no rule knows it: the tables loading reads
    (blip2/parts.py, common/bert.py), right to left."""
    rest = name[len("abstractor."):]
    layer = re.match(r"^layers\.(\d+)\.(.+)$", rest)
    if layer:
        renamed = BERT_LAYER_KEYS.to_hf(layer.group(2))
        return renamed and f"qformer.encoder.layer.{layer.group(1)}.{renamed}"
    if rest.startswith("layernorm.") and instruct:  # InstructBLIP normalises in the embeddings
        return f"qformer.embeddings.{rest}"
    return QFORMER_KEYS.to_hf(rest)


def _fused_qkv_bias() -> bool:
    """Whether the installed transformers holds the BLIP-2 ViT's attention bias as one qkv.bias (5.0 on)."""
    import transformers  # inside: transformers is optional (the reference extra) and slow to import

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
            target = EVA_VIT_KEYS.to_hf(name[len("vision."):])
            target = target and f"vision_model.{target}"
        elif name.startswith("abstractor."):
            target = _qformer_name(name, instruct)
        else:
            target = (llama_hf_name if llama else opt_hf_name)(name[len("llm."):])
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
