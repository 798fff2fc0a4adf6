"""Hugging Face Blip2ForConditionalGeneration ("blip-2") and InstructBlipForConditionalGeneration
("instructblip") -> vlmzoo config and weight names. The vision tower and the Q-Former (with the
query tokens and the language projection) are convert/hf_blip2_parts.py's; this module adds the
language model (OPT or Llama) and the fusion, and refuses what vlmzoo cannot run (Flan-T5).

Key layouts: transformers saves the language model as language_model.model.decoder.* (OPT) or
language_model.model.* (Llama) and language_model.lm_head.weight; the layout of the newer
composite models (model.language_model.*, lm_head.weight at the top) loads too."""
from __future__ import annotations

import re
from typing import Any

import torch

from vlmzoo.families.blip2.parts import blip2_parts_state_dict, blip2_vision_config, qformer_config
from vlmzoo.families.common.keys import rename
from vlmzoo.families.common.llama import LLAMA_IGNORED, LLAMA_RULES, llama_llm_config
from vlmzoo.families.common.opt import OPT_RULES, opt_llm_config, opt_relative_name

# Language models BLIP-2 checkpoints ship with that need an encoder-decoder assembly vlmzoo lacks.
_ENCODER_DECODER_TEXT = ("t5", "mt5", "umt5")


def _text_llm(hf: dict[str, Any]) -> dict[str, Any]:
    text = hf.get("text_config") or {}
    text_type = text.get("model_type", "opt")  # Blip2Config's and InstructBlipConfig's default text config is OPT
    if text_type == "opt":
        return opt_llm_config(text, "text_config")
    if text_type == "llama":
        # Blip2Config / InstructBlipConfig hold no tie_word_embeddings of their own: the text config's counts.
        return llama_llm_config(text, {}, "text_config")
    if text_type in _ENCODER_DECODER_TEXT:
        raise ValueError(f"config.json text_config.model_type: {text_type!r} is not supported: BLIP-2 / InstructBLIP "
                         "with an encoder-decoder language model (Flan-T5) needs an encoder-decoder assembly vlmzoo does "
                         "not have yet; supported language models: opt, llama")
    raise ValueError(f"config.json text_config.model_type: {text_type!r} is not supported; supported: opt, llama")


def blip2_config(hf: dict[str, Any], instruct: bool) -> dict[str, Any]:
    """vlmzoo config dict for a Blip2Config (instruct=False) or InstructBlipConfig (instruct=True) dict."""
    llm = _text_llm(hf)
    image_token = hf.get("image_token_index", hf.get("image_token_id"))
    return {
        "name": hf.get("_name_or_path") or ("instructblip" if instruct else "blip2"),
        "family": "blip2",
        "vision": blip2_vision_config(hf),
        "abstractor": qformer_config(hf, instruct),
        # No image token (checkpoints converted before transformers 4.47): the queries go before the
        # text and the attention mask grows to cover them, as transformers' legacy path did.
        "fusion": {"kind": "splice", "image_token_id": -1 if image_token is None else int(image_token)},
        "llm": llm,
    }


def _language_model_name(name: str, kind: str) -> str | None:
    """The name relative to the text decoder (and lm_head.weight) of a language-model weight, or None."""
    if name in ("lm_head.weight", "language_model.lm_head.weight"):
        return "lm_head.weight"
    for prefix in ("language_model.", "model.language_model."):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if kind == "opt":
                return opt_relative_name(rest)
            return re.sub(r"^model\.", "", rest)
    return None


def blip2_state_dict(hf_tensors: dict[str, torch.Tensor], kind: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """vlmzoo names for a BLIP-2 / InstructBLIP checkpoint whose language model is llm kind `kind`;
    returns (mapped, names no rule knows)."""
    mapped, unknown, rest = blip2_parts_state_dict(hf_tensors)
    rules = OPT_RULES if kind == "opt" else LLAMA_RULES
    for name, tensor in rest.items():
        relative = _language_model_name(name, kind)
        if relative is not None and kind == "llama" and any(re.search(p, relative) for p in LLAMA_IGNORED):
            continue
        renamed = rename(rules, relative) if relative is not None else None
        if renamed is None:
            unknown.append(name)
        else:
            mapped[f"llm.{renamed}"] = tensor
    return mapped, unknown


def _convert(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor], instruct: bool):
    config = blip2_config(hf_config, instruct)
    mapped, unknown = blip2_state_dict(hf_tensors, config["llm"]["kind"])
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    return config, mapped, unknown


def convert_blip2(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """Blip2ForConditionalGeneration: (vlmzoo config, tensors under vlmzoo names, unknown names)."""
    return _convert(hf_config, hf_tensors, instruct=False)


def convert_instructblip(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """InstructBlipForConditionalGeneration: (vlmzoo config, tensors under vlmzoo names, unknown names)."""
    return _convert(hf_config, hf_tensors, instruct=True)
