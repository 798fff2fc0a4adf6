"""Checkpoint folders as slot sources ({"from": FOLDER or HUB_ID}, vlmzoo.config.sources): the vlmzoo config
a folder holds (its converter run on config.json alone) and its weights under vlmzoo names. Registered
with the config layer's FOLDER_READERS, as the models layer registers nothing upward."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmzoo.config.sources import FOLDER_READERS
from vlmzoo.families.registry import PART_LEAVES_TO_INIT, folder_layout, folder_loader, part_converter_for
from vlmzoo.models.checkpoint import VLMZOO_CONFIG, read_json_object, read_safetensors_folder


def folder_config(folder: Path) -> dict[str, Any]:
    """The vlmzoo config of the model saved in `folder` (vlmzoo's own, or a Hugging Face one); reads no tensors."""
    folder = Path(folder)
    if (folder / VLMZOO_CONFIG).is_file():
        return read_json_object(folder / VLMZOO_CONFIG)
    if folder_layout(folder) is not None:
        return folder_layout(folder)(folder, with_tensors=False)[0]
    load = folder_loader(folder)
    if load is not None:  # torchscale's BEiT-3: only its weights say which head it has, so it is loaded
        return dict(load(folder).config)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: neither {VLMZOO_CONFIG} nor a Hugging Face config.json")
    hf_config = read_json_object(folder / "config.json")
    config, _, _ = part_converter_for(hf_config.get("model_type"), str(folder / "config.json"))(hf_config, {})
    return config


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors under vlmzoo names (names no rule knows are left out: a slot missing one fails
    the slot's own check, naming the parameter)."""
    folder = Path(folder)
    if folder_layout(folder) is not None:
        return folder_layout(folder)(folder)[1]
    tensors = read_safetensors_folder(folder)
    if (folder / VLMZOO_CONFIG).is_file():
        return tensors
    hf_config = read_json_object(folder / "config.json")
    _, mapped, _ = part_converter_for(hf_config.get("model_type"), str(folder / "config.json"))(hf_config, tensors)
    return mapped


def folder_leaves_to_init(folder: Path) -> dict[str, list[str]]:
    """slot -> patterns of the parameters the folder has no weights for by design (a BERT lends a Q-Former its
    layers, not its queries or cross-attention): those keep the host's initialisation."""
    folder = Path(folder)
    if (folder / VLMZOO_CONFIG).is_file() or not (folder / "config.json").is_file() or folder_layout(folder):
        return {}
    return PART_LEAVES_TO_INIT.get(read_json_object(folder / "config.json").get("model_type"), {})


FOLDER_READERS.update(config=folder_config, weights=folder_weights, leaves_to_init=folder_leaves_to_init)
