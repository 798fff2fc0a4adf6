"""Checkpoint folders: reading safetensors (single or sharded), vlmzoo's own format, and the
dispatch of `from_pretrained` to the converter that knows a folder's layout."""
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


def load_model(folder: str | Path) -> Any:
    from ..model import Model

    folder = Path(folder)
    model = Model(json.loads((folder / VLMZOO_CONFIG).read_text()))
    model.load_state_dict(read_safetensors_folder(folder))
    return model


def from_pretrained(folder: str | Path, dtype: torch.dtype | None = None) -> Any:
    """A model from a checkpoint folder: vlmzoo's own, or a Hugging Face one (config.json +
    safetensors). Missing or unexpected weights raise a KeyError naming them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    if (folder / VLMZOO_CONFIG).is_file():
        model = load_model(folder)
    elif (folder / "config.json").is_file():
        from .hf_llava import HF_CONVERTERS

        hf_config = json.loads((folder / "config.json").read_text())
        model_type = hf_config.get("model_type")
        if model_type not in HF_CONVERTERS:
            raise ValueError(
                f"{folder / 'config.json'}: model_type {model_type!r} is not supported; "
                f"supported: {', '.join(sorted(HF_CONVERTERS))}"
            )
        model = HF_CONVERTERS[model_type](hf_config, read_safetensors_folder(folder))
    else:
        raise FileNotFoundError(f"{folder}: neither {VLMZOO_CONFIG} nor a Hugging Face config.json")
    if dtype is not None:
        model.to(dtype)
    return model
