"""Checkpoint folders: reading safetensors (single or sharded) and writing vlmzoo's own format."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

VLMZOO_CONFIG = "vlmzoo_config.json"
WEIGHTS = "model.safetensors"


def read_safetensors_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: model.safetensors, a sharded index, or pytorch_model.bin."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_file(folder / shard))
        return tensors
    files = sorted(folder.glob("*.safetensors"))
    if files:
        tensors = {}
        for f in files:
            tensors.update(load_file(f))
        return tensors
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no *.safetensors, model.safetensors.index.json or pytorch_model.bin found")


def save_model(model: Any, folder: str | Path) -> Path:
    """vlmzoo's own checkpoint: the resolved config as JSON and the weights as safetensors."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VLMZOO_CONFIG).write_text(json.dumps(model.config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    return folder
