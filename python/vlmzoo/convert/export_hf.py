"""vlmzoo LLaVA -> a Hugging Face folder (config.json + model.safetensors) that transformers'
LlavaForConditionalGeneration loads: the inverse of convert/hf_llava.py.

Weights are written in the layout of the llava-hf checkpoints on the Hub (vision_tower.vision_model.*,
multi_modal_projector.linear_{1,2}.*, language_model.model.*, language_model.lm_head.weight), which
every transformers version from 4.45 to 5.x loads. A config transformers cannot express (a linear
projector, a CLIP tower without its CLS, ...) is refused with the field that stands in the way.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

# vlmzoo activation names -> transformers' ACT2FN names.
_HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu",
                   "relu": "relu", "relu2": "relu2"}
# Tower layouts transformers has: (class_token, pre_norm, patch_bias) per vision style.
_TOWERS = {"clip": ("clip_vision_model", True, True, False), "siglip": ("siglip_vision_model", False, False, True)}


class NotExportable(ValueError):
    """The config uses something transformers' LLaVA cannot express."""


def _activation(name: str, where: str) -> str:
    if name not in _HF_ACTIVATIONS:
        raise NotExportable(f"{where}: activation {name!r} has no transformers name ({', '.join(_HF_ACTIVATIONS)})")
    return _HF_ACTIVATIONS[name]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' LLaVA: {message}")


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
        "hidden_act": _activation(llm["act"], "llm.act"),
        "bos_token_id": llm["bos_token_id"], "eos_token_id": llm["eos_token_id"],
        "pad_token_id": llm["pad_token_id"], "tie_word_embeddings": bool(llm.get("tie_embeddings", False)),
    }


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


# (pattern over the vlmzoo name, Hugging Face replacement): the inverse of hf_llava's rules.
_RULES = [
    (r"^vision\.class_embed$", "vision_tower.vision_model.embeddings.class_embedding"),
    (r"^vision\.patch_embed\.(weight|bias)$", r"vision_tower.vision_model.embeddings.patch_embedding.\1"),
    (r"^vision\.position_embed\.weight$", "vision_tower.vision_model.embeddings.position_embedding.weight"),
    (r"^vision\.pre_norm\.(weight|bias)$", r"vision_tower.vision_model.pre_layrnorm.\1"),
    (r"^vision\.post_norm\.(weight|bias)$", r"vision_tower.vision_model.post_layernorm.\1"),
    (r"^vision\.layers\.(\d+)\.norm([12])\.(weight|bias)$", r"vision_tower.vision_model.encoder.layers.\1.layer_norm\2.\3"),
    (r"^vision\.layers\.(\d+)\.attn\.(q|k|v)_proj\.(weight|bias)$",
     r"vision_tower.vision_model.encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"^vision\.layers\.(\d+)\.attn\.o_proj\.(weight|bias)$", r"vision_tower.vision_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"^vision\.layers\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$", r"vision_tower.vision_model.encoder.layers.\1.mlp.\2.\3"),
    (r"^abstractor\.layers\.0\.(weight|bias)$", r"multi_modal_projector.linear_1.\1"),
    (r"^abstractor\.layers\.1\.(weight|bias)$", r"multi_modal_projector.linear_2.\1"),
    (r"^llm\.embed_tokens\.weight$", "language_model.model.embed_tokens.weight"),
    (r"^llm\.norm\.weight$", "language_model.model.norm.weight"),
    (r"^llm\.lm_head\.weight$", "language_model.lm_head.weight"),
    (r"^llm\.layers\.(\d+)\.attn_norm\.weight$", r"language_model.model.layers.\1.input_layernorm.weight"),
    (r"^llm\.layers\.(\d+)\.mlp_norm\.weight$", r"language_model.model.layers.\1.post_attention_layernorm.weight"),
    (r"^llm\.layers\.(\d+)\.attn\.([qkvo])_proj\.(weight|bias)$", r"language_model.model.layers.\1.self_attn.\2_proj.\3"),
    (r"^llm\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)$", r"language_model.model.layers.\1.mlp.\2_proj.\3"),
]


def llava_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Hugging Face names for vlmzoo LLaVA tensors; a name no rule knows raises, naming it."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state_dict.items():
        for pattern, replacement in _RULES:
            if re.match(pattern, name):
                out[re.sub(pattern, replacement, name)] = tensor.detach().contiguous()
                break
        else:
            unknown.append(name)
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


def write_transformers_folder(folder: str | Path, hf_config: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path:
    """config.json + model.safetensors, as transformers' from_pretrained reads them; the config's dtype is the
    tensors' when they share one."""
    from safetensors.torch import save_file

    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        hf_config["dtype"] = str(next(iter(dtypes))).removeprefix("torch.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def save_llava_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo LLaVA) to `folder` for transformers' LlavaForConditionalGeneration.from_pretrained.
    Tensors keep the model's dtype."""
    config = model.config
    return write_transformers_folder(folder, llava_hf_config(config, model.visual_tokens_per_image),
                                     llava_hf_state_dict(model.state_dict(), config))


def _exporters() -> dict[str, Any]:
    """family -> exporter, for save_pretrained(folder, format="transformers")."""
    from .export_hf_blip2 import save_blip2_for_transformers
    from .export_hf_dual import save_dual_for_transformers

    from ..families.flamingo import save_idefics_for_transformers

    return {"llava": save_llava_for_transformers, "blip2": save_blip2_for_transformers,
            "clip": save_dual_for_transformers, "siglip": save_dual_for_transformers,
            "flamingo": save_idefics_for_transformers}


def save_for_transformers(model: Any, folder: str | Path, processor: Any = None) -> Path:
    """The model (and, for a LLaVA, its processor or word tokenizer when given) as a transformers folder."""
    from ..quantize import refuse_saving

    refuse_saving(model, "export to transformers")  # packed weights have no transformers names
    family = model.config["family"]
    exporters = _exporters()
    if family not in exporters:
        raise NotExportable(f"no transformers export for family {family!r}; exportable: {', '.join(exporters)}")
    if processor is not None and family != "llava":
        raise NotExportable(f"processor: exporting a processor is implemented for llava only, not {family!r}")
    folder = exporters[family](model, folder)
    if processor is not None:
        from .export_hf_processor import save_llava_processor_for_transformers

        save_llava_processor_for_transformers(model, folder, processor)
    return folder
