"""save_pretrained(folder, format="transformers"): the family's exporter (its folder under families/),
registered with the models layer as the "transformers" save format."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmzoo.families.common.export import NotExportable, write_transformers_folder  # noqa: F401  (re-exported)
from vlmzoo.families.llava.export import save_llava_for_transformers  # noqa: F401  (re-exported)
from vlmzoo.families.registry import FAMILY_FOLDERS
from vlmzoo.models.assembly import SAVE_FORMATS
from vlmzoo.models.quantize import refuse_saving


def save_for_transformers(model: Any, folder: str | Path, processor: Any = None) -> Path:
    """The model (and its processor or word tokenizer when given, where the family can write one) as a
    transformers folder."""
    refuse_saving(model, "export to transformers")  # packed weights have no transformers names
    family = model.config["family"]
    exportable = [name for name, parts in FAMILY_FOLDERS.items() if parts.exporter is not None]
    parts = FAMILY_FOLDERS.get(family)
    if parts is None or parts.exporter is None:
        raise NotExportable(f"no transformers export for family {family!r}; exportable: {', '.join(exportable)}")
    if processor is not None and parts.processor_exporter is None:
        raise NotExportable(f"processor: exporting a processor is implemented for llava only, not {family!r}")
    folder = parts.exporter(model, folder)
    if processor is not None:
        parts.processor_exporter(model, folder, processor)
    return folder


SAVE_FORMATS["transformers"] = lambda model, folder, processor=None: save_for_transformers(model, folder, processor)
