"""BEiT-3's torchscale checkpoint layout, both ways, from one key table.

The released checkpoints (microsoft/unilm beit3) are `.pth` files holding {"model": state_dict}, the
backbone under `beit3.` (torchscale 0.3.0's BEiT3) and a task head beside it (BEiT3ForRetrieval,
BEiT3ForVisualQuestionAnswering, BEiT3ForImageClassification). The folder's config.json holds
torchscale's EncoderConfig fields under their own names (encoder_embed_dim, encoder_layers, multiway,
img_size, patch_size, vocab_size, ...). Converters are pure: (config, tensors) in, (config, tensors) out."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.models.checkpoint import read_json_object
from vlmzoo.models.multiway_encoder import MultiwayEncoderModel
from vlmzoo.models.validate import check_finite, describe_key_problems

# (torchscale prefix, vlmzoo prefix); a key maps by its longest matching prefix.
BACKBONE_KEYS: tuple[tuple[str, str], ...] = (
    ("beit3.text_embed.", "llm.text_embed."),
    ("beit3.vision_embed.proj.", "vision.proj."),
    ("beit3.vision_embed.cls_token", "vision.cls_token"),
    ("beit3.vision_embed.mask_token", "vision.mask_token"),
    ("beit3.encoder.embed_positions.A.", "vision.embed_positions."),
    ("beit3.encoder.embed_positions.B.", "llm.embed_positions."),
    ("beit3.encoder.layers.", "llm.layers."),
    ("beit3.encoder.layer_norm.", "llm.layer_norm."),
)
HEAD_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "retrieval": (("vision_head.", "head.vision_head."), ("language_head.", "head.language_head."),
                  ("logit_scale", "head.logit_scale")),
    "vqa": (("pooler.norm.", "head.pooler_norm."), ("pooler.dense.", "head.pooler."), ("head.0.", "head.fc1."),
            ("head.1.", "head.norm."), ("head.3.", "head.fc2.")),
    "image_classification": (("fc_norm.", "head.fc_norm."), ("head.", "head.head.")),
}
# A key only this head's checkpoints hold: which head a state dict carries.
HEAD_MARKERS = {"retrieval": "language_head.weight", "vqa": "pooler.dense.weight",
                "image_classification": "fc_norm.weight"}

# EncoderConfig field -> (slot, vlmzoo field)
CONFIG_FIELDS = {
    "encoder_embed_dim": ("llm", "hidden"), "encoder_attention_heads": ("llm", "heads"),
    "encoder_ffn_embed_dim": ("llm", "mlp"), "encoder_layers": ("llm", "layers"), "vocab_size": ("llm", "vocab"),
    "max_source_positions": ("llm", "max_positions"), "layernorm_eps": ("llm", "eps"),
    "activation_fn": ("llm", "act"), "img_size": ("vision", "image_size"), "patch_size": ("vision", "patch_size"),
    "in_chans": ("vision", "channels"),
}
# EncoderConfig's defaults for the fields above (torchscale/architecture/config.py).
ENCODER_DEFAULTS = {"encoder_embed_dim": 768, "encoder_attention_heads": 12, "encoder_ffn_embed_dim": 3072,
                    "encoder_layers": 12, "vocab_size": -1, "max_source_positions": 1024, "layernorm_eps": 1e-5,
                    "activation_fn": "gelu", "img_size": 224, "patch_size": 16, "in_chans": 3}
# Fields whose other values build something BEiT-3's multiway encoder does not have: field -> (wanted, why).
REQUIRED = {
    "multiway": (True, "BEiT-3 is a multiway transformer"),
    "subln": (True, "the multiway layer is the sub-LN (Magneto) layer"),
    "deepnorm": (False, "DeepNorm's post-LN layers are not built"),
    "encoder_normalize_before": (True, "the layers are pre-LN"),
    "normalize_output": (True, "the final per-modality LayerNorm is always applied"),
    "no_scale_embedding": (True, "embeddings are not scaled"),
    "layernorm_embedding": (False, "there is no embedding LayerNorm"),
    "rel_pos_buckets": (0, "relative position buckets are not built"),
    "xpos_rel_pos": (False, "xPos is not built"),
    "moe_freq": (0, "sparse MoE layers are not built (the experts are per modality)"),
    "share_encoder_input_output_embed": (False, "BEiT3 refuses it too"),
}
REQUIRED_DEFAULTS = {"multiway": False, "subln": True, "deepnorm": False, "encoder_normalize_before": True,
                     "normalize_output": True, "no_scale_embedding": True, "layernorm_embedding": False,
                     "rel_pos_buckets": 0, "xpos_rel_pos": False, "moe_freq": 0,
                     "share_encoder_input_output_embed": False}


def _map_key(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    best = None
    for theirs, ours in table:
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        if key.startswith(src) and (best is None or len(src) > len(best[0])):
            best = (src, dst)
    return None if best is None else best[1] + key[len(best[0]):]


def head_of(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The head kind a torchscale-layout state dict carries, or None for a backbone alone."""
    found = [kind for kind, marker in HEAD_MARKERS.items() if marker in tensors]
    if len(found) > 1:
        raise ValueError(f"checkpoint holds the keys of several heads ({', '.join(found)}); expected one")
    return found[0] if found else None


def config_from_torchscale(encoder_config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                           where: str = "config.json") -> dict[str, Any]:
    """A vlmzoo beit3 config from torchscale's EncoderConfig fields and the head the tensors hold."""
    for field, (wanted, why) in REQUIRED.items():
        value = encoder_config.get(field, REQUIRED_DEFAULTS[field])
        if value != wanted:
            raise ValueError(f"{where}: {field} is {value!r}; vlmzoo's BEiT-3 needs {wanted!r} ({why})")
    if "beit3.encoder.output_projection.weight" in tensors:
        raise ValueError(f"{where}: the checkpoint holds beit3.encoder.output_projection (no_output_layer false); "
                         "BEiT-3's released checkpoints have none and vlmzoo builds none")
    config: dict[str, Any] = {"family": "beit3", "vision": {"kind": "beit3_patch"}, "llm": {"kind": "multiway"}}
    for field, (slot, name) in CONFIG_FIELDS.items():
        value = encoder_config.get(field, ENCODER_DEFAULTS[field])
        config[slot][name] = value
    if config["llm"]["vocab"] <= 0:
        raise ValueError(f"{where}: vocab_size is {config['llm']['vocab']}; BEiT-3 needs a text vocabulary")
    if "pad_token_id" in encoder_config:
        config["llm"]["pad_token_id"] = encoder_config["pad_token_id"]
    kind = head_of(tensors)
    if kind == "vqa":
        config["head"] = {"kind": "vqa", "classes": int(tensors["head.3.weight"].shape[0])}
    elif kind == "image_classification":
        config["head"] = {"kind": "image_classification", "classes": int(tensors["head.weight"].shape[0])}
    elif kind == "retrieval":
        config["head"] = {"kind": "retrieval"}
    return config


def from_torchscale(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """torchscale names -> vlmzoo names; returns (mapped, keys no rule maps)."""
    kind = head_of(tensors)
    table = BACKBONE_KEYS + (HEAD_KEYS[kind] if kind else ())
    mapped, unknown = {}, []
    for key, value in tensors.items():
        name = _map_key(key, table)
        if name is None:
            unknown.append(key)
        else:
            mapped[name] = value
    return mapped, unknown


def to_torchscale(state_dict: Mapping[str, torch.Tensor], head_kind: str) -> dict[str, torch.Tensor]:
    """vlmzoo names -> torchscale names (the released checkpoints' `model` dict)."""
    table = BACKBONE_KEYS + HEAD_KEYS.get(head_kind, ())
    out = {}
    for key, value in state_dict.items():
        name = _map_key(key, table, reverse=True)
        if name is None:
            raise KeyError(f"{key}: no torchscale name for it")
        out[name] = value
    return out


def encoder_config_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """A vlmzoo beit3 config -> torchscale EncoderConfig keyword arguments."""
    out: dict[str, Any] = {field: wanted for field, (wanted, _) in REQUIRED.items()}
    for field, (slot, name) in CONFIG_FIELDS.items():
        out[field] = config[slot][name]
    out["no_output_layer"] = True
    return out


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """A .pth holding {"model": state_dict} ({"module": ...}, or the state dict itself), without unpickling code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the reader trips on, named
        raise ValueError(f"{path}: not a readable torch checkpoint of tensors ({type(e).__name__}: {e})") from None
    for key in ("model", "module"):  # unilm's loader reads either (model_key='model|module')
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected {{'model': state_dict}} or a state dict of tensors")
    return obj


def is_torchscale_folder(folder: Path) -> bool:
    """A folder with one .pth and a config.json of EncoderConfig fields."""
    config = folder / "config.json"
    if not config.is_file() or not list(folder.glob("*.pth")):
        return False
    try:
        return "encoder_embed_dim" in json.loads(config.read_text())
    except ValueError:
        return False


def load_torchscale_folder(folder: Path, dtype: torch.dtype | None = None) -> Any:
    """vlmzoo.from_pretrained for a torchscale BEiT-3 folder. A backbone without a head gets the
    family's head (vqa) freshly initialised."""
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise ValueError(f"{folder}: expected one .pth checkpoint, found {len(files)}: {[f.name for f in files]}")
    tensors = read_pth(files[0])
    check_finite(tensors, f"{files[0]}: checkpoint tensors hold")
    config = config_from_torchscale(read_json_object(folder / "config.json"), tensors, str(folder / "config.json"))
    mapped, unknown = from_torchscale(tensors)
    with_head = head_of(tensors) is not None
    model = MultiwayEncoderModel(config, dtype=dtype, initialize=not with_head)
    own = dict(model.named_parameters())
    missing = sorted(k for k in own if k not in mapped and (with_head or not k.startswith("head.")))
    unexpected = sorted(unknown + [k for k in mapped if k not in own])
    if missing or unexpected:
        raise KeyError(f"{files[0]}: the torchscale BEiT-3 checkpoint does not match {folder / 'config.json'}: "
                       + describe_key_problems(missing, unexpected))
    if not with_head:
        mapped.update({k: v.detach().clone() for k, v in own.items() if k.startswith("head.")})
    model.load_state_dict({k: v.to(model.dtype) for k, v in mapped.items()})
    return model
