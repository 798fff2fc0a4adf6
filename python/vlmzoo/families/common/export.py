"""What every transformers export shares: the error for a config transformers cannot express, the
activation names back, and writing the folder (config.json + model.safetensors)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

# vlmzoo activation names -> transformers' ACT2FN names.
HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu",
                  "relu": "relu", "relu2": "relu2"}


class NotExportable(ValueError):
    """The config uses something the transformers class of its family cannot express."""


def hf_activation(name: str, where: str) -> str:
    """transformers' name of a vlmzoo activation."""
    if name not in HF_ACTIVATIONS:
        raise NotExportable(f"{where}: activation {name!r} has no transformers name ({', '.join(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def write_transformers_folder(folder: str | Path, hf_config: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path:
    """config.json + model.safetensors, as transformers' from_pretrained reads them; the config's dtype is the
    tensors' when they share one."""
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        hf_config["dtype"] = str(next(iter(dtypes))).removeprefix("torch.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
