"""What a family folder lends the package (`FamilyParts`): its Hugging Face converters by model type, its
transformers exporter, its processors. Each folder's __init__.py builds one (two for clip/: CLIP and
SigLIP) and registry.py lists them, one line each."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

# (config.json dict, tensors) -> (vlmzoo config, tensors under vlmzoo names, names no rule knows); pure.
Converter = Callable[[dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]]
# (model, folder) -> the folder, written for the family's transformers class.
Exporter = Callable[[Any, "str | Path"], Path]


@dataclass(frozen=True)
class FamilyParts:
    name: str  # the family, as configs/families/<name>.json names it
    converters: Mapping[str, Converter]  # Hugging Face model_type -> converter (the family data's hf_model_types)
    exporter: Exporter | None = None  # save_pretrained(format="transformers")
    processors: Mapping[str, Callable[[Path], Any]] = field(default_factory=dict)  # processor class name -> loader
    model_type_processors: Mapping[str, str] = field(default_factory=dict)  # model_type -> processor class name
    processor_exporter: Callable[[Any, Path, Any], Any] | None = None  # writes a processor beside the export
    # A layout known by its files rather than a model_type (torchscale's BEiT-3 folder): (is it one, loader),
    # the loader taking (folder, dtype) and returning the model; and (is it one, processor loader).
    folder_loader: tuple[Callable[[Path], bool], Callable[..., Any]] | None = None
    folder_processor: tuple[Callable[[Path], bool], Callable[[Path], Any]] | None = None
