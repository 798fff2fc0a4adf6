"""A CLIP saved by open-clip-torch (its state-dict names and its open_clip_config.json) -> vlmzoo's CLIP, as a
whole model and as a slot source. The names are read into CLIPModel's (then clip/convert.py's tables take
over), so the two layouts share one key table; the attention's packed in_proj rows are split into q, k, v and
the two projections, which open_clip keeps as [width, embed] matrices, are transposed.

open_clip layout (model.py, transformer.py of open-clip-torch): `visual.conv1.weight` [W, 3, P, P] (no bias),
`visual.class_embedding` [W], `visual.positional_embedding` [G*G + 1, W], `visual.ln_pre`, `visual.ln_post`,
`visual.proj` [W, E]; the text tower at the top: `token_embedding.weight`, `positional_embedding` [ctx, W],
`ln_final`, `text_projection` [W, E], `logit_scale`; both towers' `transformer.resblocks.{i}.` hold `ln_1`,
`attn.in_proj_weight` [3W, W], `attn.in_proj_bias`, `attn.out_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`.
Text is pooled at the end-of-text token, the largest id of the vocabulary (open_clip's argmax pooling).
SigLIP models in open_clip use a timm image tower (`visual.trunk.*`): not read here yet."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmzoo.families.clip.convert import convert_clip
from vlmzoo.families.common.keys import KeyTable
from vlmzoo.models.checkpoint import read_tensor_file

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

# Left open_clip's name, right CLIPModel's (read left to right: KeyTable.to_vlmzoo); one residual block first,
# whose packed in_proj is split apart before the table is read.
_BLOCK_KEYS = KeyTable([
    ("transformer.resblocks.{i}.ln_{n}.{wb}", "encoder.layers.{i}.layer_norm{n}.{wb}"),
    ("transformer.resblocks.{i}.attn.{qkv}_proj.{wb}", "encoder.layers.{i}.self_attn.{qkv}_proj.{wb}"),
    ("transformer.resblocks.{i}.attn.out_proj.{wb}", "encoder.layers.{i}.self_attn.out_proj.{wb}"),
    ("transformer.resblocks.{i}.mlp.c_fc.{wb}", "encoder.layers.{i}.mlp.fc1.{wb}"),
    ("transformer.resblocks.{i}.mlp.c_proj.{wb}", "encoder.layers.{i}.mlp.fc2.{wb}"),
])
_VISION_KEYS = KeyTable([
    ("conv1.weight", "embeddings.patch_embedding.weight"),
    ("class_embedding", "embeddings.class_embedding"),
    ("positional_embedding", "embeddings.position_embedding.weight"),
    ("ln_pre.{wb}", "pre_layrnorm.{wb}"),
    ("ln_post.{wb}", "post_layernorm.{wb}"),
]) + _BLOCK_KEYS
_TEXT_KEYS = KeyTable([
    ("token_embedding.weight", "embeddings.token_embedding.weight"),
    ("positional_embedding", "embeddings.position_embedding.weight"),
    ("ln_final.{wb}", "final_layer_norm.{wb}"),
]) + _BLOCK_KEYS
_IGNORED = {"attn_mask"}


def is_open_clip_folder(folder: Path) -> bool:
    return (Path(folder) / OPEN_CLIP_CONFIG).is_file()


def hf_clip_config(open_clip_config: dict[str, Any], where: str = OPEN_CLIP_CONFIG) -> dict[str, Any]:
    """The CLIPConfig dict of an open_clip model config ({"model_cfg": {...}} or the model config itself)."""
    cfg = open_clip_config.get("model_cfg", open_clip_config)
    vision, text = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
    if "timm_model_name" in vision or "hf_model_name" in text:
        raise ValueError(f"{where}: timm image towers and Hugging Face text towers are not read yet (open_clip's "
                         "own ViT and text transformer are)")
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    vocab = text.get("vocab_size", 49408)
    v_width, t_width = vision.get("width", 768), text.get("width", 512)
    return {
        "model_type": "clip", "projection_dim": cfg["embed_dim"],
        "vision_config": {"hidden_size": v_width, "num_hidden_layers": vision.get("layers", 12),
                          "num_attention_heads": v_width // vision.get("head_width", 64),
                          "intermediate_size": int(v_width * vision.get("mlp_ratio", 4.0)),
                          "image_size": vision.get("image_size", 224), "patch_size": vision.get("patch_size", 16),
                          "hidden_act": act, "layer_norm_eps": 1e-5},
        "text_config": {"vocab_size": vocab, "hidden_size": t_width, "num_hidden_layers": text.get("layers", 12),
                        "num_attention_heads": text.get("heads", 8),
                        "intermediate_size": int(t_width * text.get("mlp_ratio", 4.0)),
                        "max_position_embeddings": text.get("context_length", 77), "hidden_act": act,
                        "layer_norm_eps": 1e-5, "bos_token_id": vocab - 2, "eos_token_id": vocab - 1,
                        "pad_token_id": 0},
    }


def hf_clip_state_dict(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """CLIPModel names for open_clip tensors; returns (renamed, names no rule knows)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name, tensor in tensors.items():
        if name in _IGNORED:
            continue
        if name == "logit_scale":
            out[name] = tensor.reshape(())
            continue
        if name == "visual.proj":
            out["visual_projection.weight"] = tensor.t().contiguous()
            continue
        if name == "text_projection":
            out["text_projection.weight"] = tensor.t().contiguous()
            continue
        vision = name.startswith("visual.")
        rest = name[len("visual."):] if vision else name
        prefix, table = ("vision_model.", _VISION_KEYS) if vision else ("text_model.", _TEXT_KEYS)
        if rest.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
            stem, kind = rest.rsplit(".in_proj_", 1)
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                out[prefix + table.to_vlmzoo(f"{stem}.{part}_proj.{kind}")] = chunk.contiguous()
            continue
        renamed = table.to_vlmzoo(rest)
        if renamed is None:
            unknown.append(name)
        else:
            out[prefix + renamed] = tensor
    return out, unknown


def read_open_clip_folder(folder: Path, with_tensors: bool = True):
    """(vlmzoo config, tensors under vlmzoo names, unknown names) of an open_clip folder."""
    folder = Path(folder)
    hf_config = hf_clip_config(json.loads((folder / OPEN_CLIP_CONFIG).read_text()), str(folder / OPEN_CLIP_CONFIG))
    tensors: dict[str, torch.Tensor] = {}
    if with_tensors:
        files = [folder / f for f in WEIGHT_FILES if (folder / f).is_file()]
        if not files:
            raise FileNotFoundError(f"{folder}: an open_clip folder without {' or '.join(WEIGHT_FILES)}")
        tensors = read_tensor_file(files[0])
    renamed, unknown = hf_clip_state_dict(tensors)
    config, mapped, more = convert_clip(hf_config, renamed)
    return config, mapped, unknown + more
