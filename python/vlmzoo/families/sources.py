"""Checkpoint folders as slot sources ({"from": FOLDER or HUB_ID}, vlmzoo.config.sources): the vlmzoo config
a folder holds (its converter run on config.json alone) and its weights under vlmzoo names. Registered
with the config layer's FOLDER_READERS, as the models layer registers nothing upward."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlmzoo.config.sources import FOLDER_READERS
from vlmzoo.families.registry import part_converter_for
from vlmzoo.models.checkpoint import VLMZOO_CONFIG, read_json_object, read_safetensors_folder


def folder_config(folder: Path) -> dict[str, Any]:
    """The vlmzoo config of the model saved in `folder` (vlmzoo's own, or a Hugging Face one); reads no tensors."""
    folder = Path(folder)
    if (folder / VLMZOO_CONFIG).is_file():
        return read_json_object(folder / VLMZOO_CONFIG)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: neither {VLMZOO_CONFIG} nor a Hugging Face config.json")
    hf_config = read_json_object(folder / "config.json")
    config, _, _ = part_converter_for(hf_config.get("model_type"), str(folder / "config.json"))(hf_config, {})
    return config


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's tensors under vlmzoo names (names no rule knows are left out: a slot missing one fails
    the slot's own check, naming the parameter)."""
    folder = Path(folder)
    tensors = read_safetensors_folder(folder)
    if (folder / VLMZOO_CONFIG).is_file():
        return tensors
    hf_config = read_json_object(folder / "config.json")
    _, mapped, _ = part_converter_for(hf_config.get("model_type"), str(folder / "config.json"))(hf_config, tensors)
    return mapped


FOLDER_READERS.update(config=folder_config, weights=folder_weights)
