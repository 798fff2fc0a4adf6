"""`vlmzoo.from_pretrained`: a model from a checkpoint folder, vlmzoo's own or a Hugging Face one.
The model is built without drawing random weights (they are about to be overwritten), in the
requested dtype, then the checkpoint is checked whole (names, shapes, finiteness) and copied in."""
from __future__ import annotations

from pathlib import Path

import torch

from .convert.checkpoint import VLMZOO_CONFIG, read_json_object, read_safetensors_folder
from .convert.hf import HF_CONVERTERS, UNSUPPORTED
from .convert.validate import check_finite
from .model import Model


def _float_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _load_hf(folder: Path, dtype: torch.dtype | None) -> Model:
    hf_config = read_json_object(folder / "config.json")
    model_type = hf_config.get("model_type")
    if model_type in UNSUPPORTED:
        raise ValueError(f"{folder / 'config.json'}: {UNSUPPORTED[model_type]}")
    if model_type not in HF_CONVERTERS:
        raise ValueError(
            f"{folder / 'config.json'}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(sorted(HF_CONVERTERS))}"
        )
    tensors = read_safetensors_folder(folder)
    # Named as the file names them, before conversion renames, splits or fuses them.
    check_finite(tensors, f"{folder}: checkpoint tensors hold")
    config, mapped, unknown = HF_CONVERTERS[model_type](hf_config, tensors)
    model = Model(config, dtype=dtype, initialize=False)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(unknown + [k for k in mapped if k not in own])
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing weights ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected weights ({len(unexpected)}): {', '.join(unexpected)}")
        raise KeyError(f"Hugging Face {model_type} checkpoint does not match its config: " + "; ".join(parts))
    model.load_state_dict(_float_tensors(mapped, model.dtype))
    return model


def from_pretrained(folder: str | Path, dtype: torch.dtype | None = None) -> Model:
    """A model from a checkpoint folder: vlmzoo's own (vlmzoo_config.json), or a Hugging Face one
    (config.json + safetensors, sharded too, or pytorch_model.bin loaded without unpickling code).
    Missing or unexpected weights raise a KeyError naming them; dtype builds the model in that dtype."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    if (folder / VLMZOO_CONFIG).is_file():
        model = Model(read_json_object(folder / VLMZOO_CONFIG), dtype=dtype, initialize=False)
        model.load_state_dict(_float_tensors(read_safetensors_folder(folder), model.dtype))
        return model
    from .families.beit3 import is_torchscale_folder, load_torchscale_folder  # BEiT-3's torchscale .pth layout

    if is_torchscale_folder(folder):
        return load_torchscale_folder(folder, dtype)
    if (folder / "config.json").is_file():
        return _load_hf(folder, dtype)
    raise FileNotFoundError(f"{folder}: neither {VLMZOO_CONFIG} nor a Hugging Face config.json")
