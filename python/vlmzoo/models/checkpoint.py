"""Checkpoint folders: reading safetensors (single or sharded) and torch state dicts without ever
unpickling code, and writing vlmzoo's own format atomically. Building models is vlmzoo.loading's."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vlmzoo.models.quantize import refuse_saving
from vlmzoo.storage.atomic import atomic_save_safetensors, atomic_write_text


VLMZOO_CONFIG = "vlmzoo_config.json"
WEIGHTS = "model.safetensors"


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, expected an object")
    return value


def read_safetensors_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or corrupt file is a ValueError naming it."""
    try:
        return load_file(path)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from None


def read_torch_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A .bin/.pth/.pt state dict, read without unpickling anything but tensors and plain containers."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused, it holds objects that only full unpickling could build, and "
                         f"vlmzoo never unpickles checkpoints (convert it to safetensors): {e}") from None
    except Exception as e:  # a torn zip, a legacy tar, garbage: whatever the reader trips on
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a dict of tensor names to tensors")
    odd = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"{path}: expected a flat dict of tensor names to tensors; not tensors: {', '.join(odd[:10])}")
    return obj


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    return read_safetensors_file(path) if path.suffix == ".safetensors" else read_torch_file(path)


def _shards_of_index(index_path: Path) -> tuple[list[Path], dict[str, str]]:
    """The shard files a *.index.json names (plain file names beside it, each present) and its weight map."""
    index = read_json_object(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path}: weight_map must be an object mapping tensor names to shard file names")
    shards = []
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise ValueError(f"{index_path}: shard {shard!r} is not a file name in the checkpoint folder")
        if not (index_path.parent / shard).is_file():
            raise FileNotFoundError(f"{index_path}: shard {shard!r} does not exist")
        shards.append(index_path.parent / shard)
    return shards, weight_map


def _read_all(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    source: dict[str, Path] = {}
    for f in files:
        for name, tensor in read_tensor_file(f).items():
            if name in source:
                raise ValueError(f"tensor {name!r} is in both {source[name]} and {f}")
            tensors[name], source[name] = tensor, f
    return tensors


def read_safetensors_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: *.safetensors (single, or sharded with an index), else
    pytorch_model.bin (single or sharded). Never unpickles; a bad file is an error naming it."""
    folder = Path(folder)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards, weight_map = _shards_of_index(index)
            tensors = _read_all(shards)
            absent = sorted(name for name in weight_map if name not in tensors)
            if absent:
                raise ValueError(f"{index}: {len(absent)} tensors are not in the shards it names: {', '.join(absent[:10])}")
            return tensors
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return _read_all(files)
    if (folder / "pytorch_model.bin").is_file():
        return read_torch_file(folder / "pytorch_model.bin")
    raise FileNotFoundError(f"{folder}: no *.safetensors, model.safetensors.index.json or pytorch_model.bin found")


def save_model(model: Any, folder: str | Path) -> Path:
    """vlmzoo's own checkpoint: the resolved config as JSON and the weights as safetensors.

    Each file is replaced atomically (weights first), so a process killed while saving over an
    older checkpoint of the same model leaves that checkpoint loadable, with the old or new weights."""
    refuse_saving(model, "save_pretrained")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_save_safetensors(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    atomic_write_text(folder / VLMZOO_CONFIG, json.dumps(model.config, indent=2))
    return folder
