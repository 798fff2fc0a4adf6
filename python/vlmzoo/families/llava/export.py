"""vlmzoo LLaVA -> a Hugging Face folder (config.json + model.safetensors) that transformers'
LlavaForConditionalGeneration loads: the inverse of llava/convert.py.

Weights are written in the layout of the llava-hf checkpoints on the Hub (vision_tower.vision_model.*,
multi_modal_projector.linear_{1,2}.*, language_model.model.*, language_model.lm_head.weight), which
every transformers version from 4.45 to 5.x loads. A config transformers cannot express (a linear
projector, a CLIP tower without its CLS, ...) is refused with the field that stands in the way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.families.common.export import NotExportable, hf_activation as _activation, write_transformers_folder
from vlmzoo.families.common.llama import llama_hf_name, llama_text_config
from vlmzoo.families.common.vit import VIT_KEYS
from vlmzoo.families.llava.convert import PROJECTOR_KEYS

# Tower layouts transformers has: (class_token, pre_norm, patch_bias) per vision style.
_TOWERS = {"clip": ("clip_vision_model", True, True, False), "siglip": ("siglip_vision_model", False, False, True)}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' LLaVA: {message}")


def llava_hf_config(config: Mapping[str, Any], visual_tokens_per_image: int | None = None) -> dict[str, Any]:
    """transformers LlavaConfig dict for a resolved vlmzoo LLaVA config."""
    _require(config.get("family") == "llava", f"family is {config.get('family')!r}, not 'llava'")
    vision, abstractor, fusion, llm = config["vision"], config["abstractor"], config["fusion"], config["llm"]
    _require(vision.get("kind") == "vit", f"vision.kind is {vision.get('kind')!r} (transformers' LLaVA: vit)")
    style = vision.get("style", "clip")
    _require(style in _TOWERS, f"vision.style is {style!r} (clip or siglip)")
    model_type, class_token, pre_norm, patch_bias = _TOWERS[style]
    for field, expected in (("class_token", class_token), ("pre_norm", pre_norm), ("patch_bias", patch_bias)):
        _require(bool(vision.get(field, expected)) == expected,
                 f"vision.{field} is {vision.get(field)!r} but a {style} tower has {expected}")
    _require(abstractor.get("kind") == "mlp" and abstractor.get("depth", 2) == 2,
             f"abstractor is {abstractor.get('kind')!r} of depth {abstractor.get('depth')} (transformers: mlp, depth 2)")
    _require(fusion.get("kind") == "splice", f"fusion.kind is {fusion.get('kind')!r} (transformers' LLaVA: splice)")
    _require(llm.get("kind") == "llama", f"llm.kind is {llm.get('kind')!r} (transformers' LLaVA here: llama)")
    layers = vision["feature_layers"]
    layers = layers if isinstance(layers, int) else (layers[0] if len(layers) == 1 else list(layers))
    tie = bool(llm.get("tie_embeddings", False))
    vision_config = {
        "model_type": model_type,
        "hidden_size": vision["hidden"], "intermediate_size": vision["mlp"], "num_hidden_layers": vision["layers"],
        "num_attention_heads": vision["heads"], "num_channels": vision.get("channels", 3),
        "image_size": vision["image_size"], "patch_size": vision["patch_size"],
        "hidden_act": _activation(vision["act"], "vision.act"), "layer_norm_eps": vision["eps"],
    }
    if style == "siglip":
        vision_config["vision_use_head"] = False  # LLaVA reads hidden states; the pooling head would be random
    hf = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "dtype": "float32",
        "image_token_index": fusion["image_token_id"],
        "vision_feature_layer": layers,
        "vision_feature_select_strategy": vision.get("select", "default"),
        "projector_hidden_act": _activation(abstractor.get("act", "gelu"), "abstractor.act"),
        "multimodal_projector_bias": bool(abstractor.get("bias", True)),
        "tie_word_embeddings": tie,
        "vision_config": vision_config,
        "text_config": llama_text_config(llm),
    }
    if visual_tokens_per_image is not None:
        hf["image_seq_length"] = visual_tokens_per_image
    if config.get("name"):
        hf["_name_or_path"] = config["name"]
    return hf


def llava_hf_name(name: str) -> str | None:
    """The llava-hf name of a vlmzoo LLaVA weight, read right to left from the tables loading reads
    (common/vit.py, llava/convert.py, common/llama.py); None when no rule knows it."""
    slot, _, rest = name.partition(".")
    if slot == "vision":
        hf = VIT_KEYS.to_hf(rest)
        return hf and f"vision_tower.vision_model.{hf}"
    if slot == "abstractor":
        hf = PROJECTOR_KEYS.to_hf(rest)
        return hf and f"multi_modal_projector.{hf}"
    return llama_hf_name(rest) if slot == "llm" else None


def llava_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Hugging Face names for vlmzoo LLaVA tensors; a name no rule knows raises, naming it."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        hf = llava_hf_name(name)
        if hf is None:
            unknown.append(name)
        else:
            out[hf] = tensor.detach().contiguous()
    if unknown:
        raise NotExportable(f"no transformers name for weights ({len(unknown)}): {', '.join(sorted(unknown))}")
    vision = config["vision"]
    if "vision_tower.vision_model.post_layernorm.weight" not in out:
        # transformers' towers always have a final norm; LLaVA never reads it, so identity weights are exact.
        out["vision_tower.vision_model.post_layernorm.weight"] = torch.ones(vision["hidden"])
        out["vision_tower.vision_model.post_layernorm.bias"] = torch.zeros(vision["hidden"])
    if config["llm"].get("tie_embeddings"):
        out.pop("language_model.lm_head.weight", None)
    return out


def save_llava_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo LLaVA) to `folder` for transformers' LlavaForConditionalGeneration.from_pretrained.
    Tensors keep the model's dtype."""
    config = model.config
    return write_transformers_folder(folder, llava_hf_config(config, model.visual_tokens_per_image),
                                     llava_hf_state_dict(model.state_dict(), config))
