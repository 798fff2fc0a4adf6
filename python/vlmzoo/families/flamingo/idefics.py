"""Hugging Face IDEFICS (v1, `IdeficsForVisionText2Text`) <-> vlmzoo's flamingo family, from one key table.

Facts from transformers' models/idefics (modeling_idefics.py, perceiver.py, vision.py):
- vision: a CLIP ViT whose last hidden state (CLS kept, no post-LayerNorm) is what the model reads;
- perceiver (use_resampler): separate q/k/v without bias, optional q/k LayerNorms, ReLU MLP of 4 x the
  vision width, final LayerNorm; its output keeps the vision width, which the cross-attention k/v read;
- gated cross-attention before decoder layer i when i % cross_layer_interval == 0: RMSNorm, attention
  (optional q/k RMSNorms), tanh(alpha_cross_attn), RMSNorm, SwiGLU, tanh(alpha_dense); scalar ("float")
  or vector gates;
- extra vocabulary in `embed_tokens.additional_embedding` and `lm_head.additional_fc`: ids >= vocab_size
  read the additional rows, so vlmzoo holds one table of vocab_size + additional_vocab_size rows.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.families.common.export import NotExportable, write_transformers_folder
from vlmzoo.families.common.keys import activation
from vlmzoo.families.common.llama import LLAMA_DEFAULTS, llama_llm_config

# Defaults of transformers' IdeficsConfig / IdeficsVisionConfig / IdeficsPerceiverConfig.
IDEFICS_DEFAULTS = dict(vocab_size=32000, additional_vocab_size=0, hidden_size=4096, intermediate_size=11008,
                        num_hidden_layers=32, num_attention_heads=32, hidden_act="silu", rms_norm_eps=1e-6,
                        max_position_embeddings=2048, cross_layer_interval=1, qk_layer_norms=False,
                        alpha_type="float", use_resampler=False, tie_word_embeddings=False,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
VISION_DEFAULTS = dict(embed_dim=768, image_size=224, intermediate_size=5120, patch_size=14, num_hidden_layers=32,
                       num_attention_heads=16, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5)
PERCEIVER_DEFAULTS = dict(use_resampler=False, resampler_n_latents=64, resampler_depth=6, resampler_n_heads=16,
                          resampler_head_dim=96, qk_layer_norms_perceiver=False)

# One table, both directions: (vlmzoo name, Hugging Face name); {n} is a layer or block index, {p} a
# parameter leaf (weight | bias). The decoupled embedding / LM head rows are split and joined apart.
_P = "model.perceiver_resampler"
_V = "model.vision_model"
KEY_TABLE = [
    ("vision.class_embed", f"{_V}.embeddings.class_embedding"),
    ("vision.patch_embed.{p}", f"{_V}.embeddings.patch_embedding.{{p}}"),
    ("vision.position_embed.weight", f"{_V}.embeddings.position_embedding.weight"),
    ("vision.pre_norm.{p}", f"{_V}.pre_layrnorm.{{p}}"),
    ("vision.post_norm.{p}", f"{_V}.post_layernorm.{{p}}"),
    ("vision.layers.{n}.norm1.{p}", f"{_V}.encoder.layers.{{n}}.layer_norm1.{{p}}"),
    ("vision.layers.{n}.norm2.{p}", f"{_V}.encoder.layers.{{n}}.layer_norm2.{{p}}"),
    *[(f"vision.layers.{{n}}.attn.{x}_proj.{{p}}", f"{_V}.encoder.layers.{{n}}.self_attn.{x}_proj.{{p}}") for x in "qkv"],
    ("vision.layers.{n}.attn.o_proj.{p}", f"{_V}.encoder.layers.{{n}}.self_attn.out_proj.{{p}}"),
    ("vision.layers.{n}.mlp.fc1.{p}", f"{_V}.encoder.layers.{{n}}.mlp.fc1.{{p}}"),
    ("vision.layers.{n}.mlp.fc2.{p}", f"{_V}.encoder.layers.{{n}}.mlp.fc2.{{p}}"),
    ("abstractor.latents", f"{_P}.latents"),
    ("abstractor.layers.{n}.media_norm.{p}", f"{_P}.blocks.{{n}}.0.context_layer_norm.{{p}}"),
    ("abstractor.layers.{n}.latents_norm.{p}", f"{_P}.blocks.{{n}}.0.latents_layer_norm.{{p}}"),
    *[(f"abstractor.layers.{{n}}.{x}_proj.weight", f"{_P}.blocks.{{n}}.0.{x}_proj.weight") for x in "qkv"],
    ("abstractor.layers.{n}.q_norm.{p}", f"{_P}.blocks.{{n}}.0.q_layer_norm.{{p}}"),
    ("abstractor.layers.{n}.k_norm.{p}", f"{_P}.blocks.{{n}}.0.k_layer_norm.{{p}}"),
    ("abstractor.layers.{n}.o_proj.weight", f"{_P}.blocks.{{n}}.0.output_proj.weight"),
    ("abstractor.layers.{n}.mlp_norm.{p}", f"{_P}.blocks.{{n}}.1.ln.{{p}}"),
    ("abstractor.layers.{n}.fc1.weight", f"{_P}.blocks.{{n}}.1.fc.weight"),
    ("abstractor.layers.{n}.fc2.weight", f"{_P}.blocks.{{n}}.1.c_proj.weight"),
    ("abstractor.norm.{p}", f"{_P}.layer_norm.{{p}}"),
    ("fusion.blocks.{n}.attn_gate", "model.gated_cross_attn_layers.{n}.alpha_cross_attn"),
    ("fusion.blocks.{n}.mlp_gate", "model.gated_cross_attn_layers.{n}.alpha_dense"),
    ("fusion.blocks.{n}.attn_norm.weight", "model.gated_cross_attn_layers.{n}.input_layernorm.weight"),
    ("fusion.blocks.{n}.mlp_norm.weight", "model.gated_cross_attn_layers.{n}.post_attention_layernorm.weight"),
    *[(f"fusion.blocks.{{n}}.{x}_proj.weight", f"model.gated_cross_attn_layers.{{n}}.cross_attn.{x}_proj.weight")
      for x in "qkvo"],
    ("fusion.blocks.{n}.q_norm.weight", "model.gated_cross_attn_layers.{n}.cross_attn.q_layer_norm.weight"),
    ("fusion.blocks.{n}.k_norm.weight", "model.gated_cross_attn_layers.{n}.cross_attn.k_layer_norm.weight"),
    *[(f"fusion.blocks.{{n}}.mlp.{x}_proj.weight", f"model.gated_cross_attn_layers.{{n}}.mlp.{x}_proj.weight")
      for x in ("gate", "up", "down")],
    ("llm.norm.weight", "model.norm.weight"),
    ("llm.layers.{n}.attn_norm.weight", "model.layers.{n}.input_layernorm.weight"),
    ("llm.layers.{n}.mlp_norm.weight", "model.layers.{n}.post_attention_layernorm.weight"),
    *[(f"llm.layers.{{n}}.attn.{x}_proj.weight", f"model.layers.{{n}}.self_attn.{x}_proj.weight") for x in "qkvo"],
    *[(f"llm.layers.{{n}}.mlp.{x}_proj.weight", f"model.layers.{{n}}.mlp.{x}_proj.weight") for x in ("gate", "up", "down")],
]
# Buffers an IDEFICS checkpoint may carry that vlmzoo recomputes.
IGNORED = [r"position_ids$", r"rotary_emb\.(inv_freq|original_inv_freq)$"]
EMBED, EXTRA_EMBED = "model.embed_tokens.weight", "model.embed_tokens.additional_embedding.weight"
HEAD, EXTRA_HEAD = "lm_head.weight", "lm_head.additional_fc.weight"


def _compile(template: str) -> tuple[re.Pattern[str], str]:
    """(regex of a table name, its substitution template with the groups by name)."""
    pattern = re.escape(template).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{pattern}$"), template.replace("{n}", r"\g<n>").replace("{p}", r"\g<p>")


_TO_OURS = [(_compile(theirs)[0], _compile(ours)[1]) for ours, theirs in KEY_TABLE]
_TO_THEIRS = [(_compile(ours)[0], _compile(theirs)[1]) for ours, theirs in KEY_TABLE]


def _rename(rules: list[tuple[re.Pattern[str], str]], name: str) -> str | None:
    for pattern, replacement in rules:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def idefics_config(hf: dict[str, Any]) -> dict[str, Any]:
    """vlmzoo config dict (family flamingo) for a transformers IdeficsConfig dict."""
    top = {**IDEFICS_DEFAULTS, **hf}
    vc = {**VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    vision_width = vc.get("embed_dim") or vc.get("hidden_size")
    pc = {**PERCEIVER_DEFAULTS, **(hf.get("perceiver_config") or {})}
    base_vocab, extra = int(top["vocab_size"]), int(top["additional_vocab_size"])
    text = {k: v for k, v in top.items() if k in LLAMA_DEFAULTS or k in ("rope_parameters", "rope_theta", "rope_scaling")}
    llm = llama_llm_config({**text, "vocab_size": base_vocab + extra}, top, where="config")
    # The IDEFICS tokenizer adds <fake_token_around_image> then <image> after the base vocabulary.
    image_token_id = hf.get("image_token_id", base_vocab + 1 if extra >= 2 else -1)
    if top["alpha_type"] not in ("float", "vector"):
        raise ValueError(f"config.json alpha_type: {top['alpha_type']!r} is not supported (float, vector)")
    abstractor: dict[str, Any] = {"kind": "identity"}
    if top["use_resampler"]:
        abstractor = {"kind": "perceiver", "latents": pc["resampler_n_latents"], "layers": pc["resampler_depth"],
                      "heads": pc["resampler_n_heads"], "head_dim": pc["resampler_head_dim"], "mlp": 4 * vision_width,
                      "act": "relu", "bias": False, "kv": "separate", "qk_norm": bool(pc["qk_layer_norms_perceiver"]),
                      "eps": 1e-5, "project": False}
    return {
        "name": hf.get("_name_or_path") or "idefics",
        "family": "flamingo",
        "vision": {"kind": "vit", "style": "clip", "image_size": vc["image_size"], "patch_size": vc["patch_size"],
                   "channels": vc["num_channels"], "hidden": vision_width, "layers": vc["num_hidden_layers"],
                   "heads": vc["num_attention_heads"], "mlp": vc["intermediate_size"],
                   "act": activation(vc["hidden_act"], "vision_config.hidden_act"), "eps": vc["layer_norm_eps"],
                   "feature_layers": [-1], "select": "full"},
        "abstractor": abstractor,
        "fusion": {"kind": "cross_attention", "image_token_id": image_token_id,
                   "every": top["cross_layer_interval"], "placement": "idefics", "media": "latest",
                   "heads": top["num_attention_heads"], "head_dim": 0, "kv": "separate", "norm": "rms",
                   "qk_norm": bool(top["qk_layer_norms"]), "mlp_type": "gated", "mlp": top["intermediate_size"],
                   "act": activation(top["hidden_act"], "config.hidden_act"),
                   "gate": "vector" if top["alpha_type"] == "vector" else "scalar", "bias": False,
                   "eps": top["rms_norm_eps"]},
        "llm": llm,
    }


def convert_idefics(hf_config: dict[str, Any], hf_tensors: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """(vlmzoo config, tensors under vlmzoo names, Hugging Face names no rule knows)."""
    config = idefics_config(hf_config)
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    tensors = dict(hf_tensors)
    # Decoupled embeddings and LM head: the additional rows follow the base vocabulary.
    for base, extra, ours in ((EMBED, EXTRA_EMBED, "llm.embed_tokens.weight"), (HEAD, EXTRA_HEAD, "llm.lm_head.weight")):
        if base in tensors:
            parts = [tensors.pop(base)] + ([tensors.pop(extra)] if extra in tensors else [])
            mapped[ours] = torch.cat(parts, 0)
    if config["llm"]["tie_embeddings"]:
        mapped.pop("llm.lm_head.weight", None)
    for name, tensor in tensors.items():
        if any(re.search(p, name) for p in IGNORED):
            continue
        ours = _rename(_TO_OURS, name)
        if ours is None:
            unknown.append(name)
        else:
            mapped[ours] = tensor
    return config, mapped, unknown


def _activation_name(name: str) -> str:
    return {"gelu": "gelu", "quick_gelu": "quick_gelu", "silu": "silu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}[name]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(f"cannot export to transformers' IDEFICS: {message}")


def idefics_hf_config(config: Mapping[str, Any], base_vocab: int | None = None) -> dict[str, Any]:
    """transformers IdeficsConfig dict for a resolved vlmzoo flamingo config. base_vocab: where the
    additional vocabulary starts (default: two rows before the end, as the IDEFICS tokenizer adds two)."""
    vision, abstractor, fusion, llm = config["vision"], config["abstractor"], config["fusion"], config["llm"]
    # (slot, field, value IDEFICS has): each mismatch is named by its config path.
    fixed = [("vision", "kind", "vit"), ("vision", "style", "clip"), ("vision", "class_token", True),
             ("vision", "select", "full"), ("fusion", "kind", "cross_attention"), ("fusion", "placement", "idefics"),
             ("fusion", "norm", "rms"), ("fusion", "mlp_type", "gated"), ("fusion", "kv", "separate"),
             ("fusion", "bias", False), ("fusion", "heads", llm["heads"]), ("fusion", "mlp", llm["mlp"]),
             ("fusion", "act", llm["act"]), ("llm", "kind", "llama"), ("llm", "kv_heads", llm["heads"])]
    if abstractor["kind"] == "perceiver":
        fixed += [("abstractor", "act", "relu"), ("abstractor", "kv", "separate"), ("abstractor", "bias", False),
                  ("abstractor", "project", False)]
    else:
        fixed += [("abstractor", "kind", "identity")]
    for slot, field, value in fixed:
        got = config[slot].get(field, value)
        _require(got == value, f"{slot}.{field} is {got!r}; IDEFICS has {value!r}")
    layers = vision.get("feature_layers", [-1])
    layers = [layers] if isinstance(layers, int) else list(layers)
    _require(layers in ([-1], [vision["layers"]]), f"vision.feature_layers is {layers}; IDEFICS reads the last layer [-1]")
    _require(fusion.get("head_dim", 0) in (0, llm["hidden"] // llm["heads"]),
             f"fusion.head_dim is {fusion.get('head_dim')}; IDEFICS has llm.hidden / llm.heads")
    resampler = abstractor["kind"] == "perceiver"
    if resampler:
        _require(abstractor["mlp"] in (0, 4 * vision["hidden"]),
                 f"abstractor.mlp is {abstractor['mlp']}; IDEFICS has 4 x vision.hidden = {4 * vision['hidden']}")
    vocab = llm["vocab"]
    if base_vocab is None:
        base_vocab = vocab - 2 if fusion["image_token_id"] == vocab - 1 else vocab
    hf: dict[str, Any] = {
        "architectures": ["IdeficsForVisionText2Text"],
        "model_type": "idefics",
        "vocab_size": base_vocab, "additional_vocab_size": vocab - base_vocab,
        "hidden_size": llm["hidden"], "intermediate_size": llm["mlp"], "num_hidden_layers": llm["layers"],
        "num_attention_heads": llm["heads"], "hidden_act": _activation_name(llm["act"]),
        "rms_norm_eps": llm["rms_eps"], "max_position_embeddings": llm["max_positions"],
        "rope_parameters": {"rope_type": "default", "rope_theta": llm["rope_theta"]},
        "pad_token_id": llm["pad_token_id"], "bos_token_id": llm["bos_token_id"], "eos_token_id": llm["eos_token_id"],
        "tie_word_embeddings": bool(llm["tie_embeddings"]),
        "cross_layer_interval": fusion["every"], "qk_layer_norms": bool(fusion["qk_norm"]),
        "alpha_type": "vector" if fusion["gate"] == "vector" else "float", "alpha_initializer": "zeros",
        "use_resampler": resampler, "freeze_text_layers": False, "freeze_vision_layers": False,
        "vision_config": {"embed_dim": vision["hidden"], "image_size": vision["image_size"],
                          "patch_size": vision["patch_size"], "num_channels": vision.get("channels", 3),
                          "intermediate_size": vision["mlp"], "num_hidden_layers": vision["layers"],
                          "num_attention_heads": vision["heads"], "hidden_act": _activation_name(vision["act"]),
                          "layer_norm_eps": vision["eps"]},
        "perceiver_config": {"use_resampler": resampler},
    }
    if resampler:
        hf["perceiver_config"].update(resampler_n_latents=abstractor["latents"], resampler_depth=abstractor["layers"],
                                      resampler_n_heads=abstractor["heads"], resampler_head_dim=abstractor["head_dim"],
                                      qk_layer_norms_perceiver=bool(abstractor["qk_norm"]))
    if config.get("name"):
        hf["_name_or_path"] = config["name"]
    return hf


def idefics_hf_state_dict(state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Hugging Face names for vlmzoo flamingo tensors; a name no rule knows raises, naming it."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    base = hf_config["vocab_size"]
    for name, tensor in state_dict.items():
        tensor = tensor.detach().contiguous()
        if name in ("llm.embed_tokens.weight", "llm.lm_head.weight"):
            main, extra = (EMBED, EXTRA_EMBED) if name.startswith("llm.embed") else (HEAD, EXTRA_HEAD)
            out[main] = tensor[:base].clone()
            if tensor.size(0) > base:
                out[extra] = tensor[base:].clone()
            continue
        theirs = _rename(_TO_THEIRS, name)
        if theirs is None:
            unknown.append(name)
        else:
            out[theirs] = tensor
    if unknown:
        raise NotExportable(f"no transformers name for weights ({len(unknown)}): {', '.join(sorted(unknown))}")
    if HEAD not in out:  # tied: transformers ties lm_head to the embeddings on load
        out[HEAD] = out[EMBED].clone()
        if EXTRA_EMBED in out:
            out[EXTRA_HEAD] = out[EXTRA_EMBED].clone()
    return out


def save_idefics_for_transformers(model: Any, folder: str | Path) -> Path:
    """Writes `model` (a vlmzoo flamingo in IDEFICS's layout) for transformers' IdeficsForVisionText2Text."""
    hf_config = idefics_hf_config(model.config)
    return write_transformers_folder(folder, hf_config, idefics_hf_state_dict(model.state_dict(), hf_config))
