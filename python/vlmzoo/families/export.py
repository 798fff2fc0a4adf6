"""save_pretrained(folder, format="transformers"): the family's exporter (its folder under families/),
registered with the models layer as the "transformers" save format."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmzoo.families.auto import AutoProcessor
from vlmzoo.families.common.export import NotExportable, write_transformers_folder  # noqa: F401  (re-exported)
from vlmzoo.families.llava.export import save_llava_for_transformers  # noqa: F401  (re-exported)
from vlmzoo.families.processing.base import Processor
from vlmzoo.families.processing.word import TOKENIZER_FILE
from vlmzoo.families.registry import FAMILY_FOLDERS
from vlmzoo.models.checkpoint import VLMZOO_CONFIG
from vlmzoo.models.assembly import SAVE_FORMATS
from vlmzoo.models.quantize import refuse_saving


def _source_processor(model: Any) -> Any:
    """The processor of the folder the model was loaded from (vlmzoo.from_pretrained records it), or None
    when it has none (a vlmzoo folder without a trained tokenizer, a model built from a config)."""
    source = getattr(model, "processor_source", None)
    if source is None or ((Path(source) / VLMZOO_CONFIG).is_file() and not (Path(source) / TOKENIZER_FILE).is_file()):
        return None
    try:
        return AutoProcessor.from_pretrained(source)
    except (FileNotFoundError, ValueError):  # a folder with weights but no processor files
        return None


def save_for_transformers(model: Any, folder: str | Path, processor: Any = None) -> Path:
    """The model as a transformers folder, with its processor so AutoProcessor reads the folder back: the one
    given (a processor or word tokenizer), else the processor of the folder the model was loaded from. A LLaVA's
    processor is written from its fields (a word tokenizer as a tokenizers WordLevel); other families' processors
    read from a Hugging Face folder write that folder's processor files."""
    refuse_saving(model, "export to transformers")  # packed weights have no transformers names
    family = model.config["family"]
    exportable = [name for name, parts in FAMILY_FOLDERS.items() if parts.exporter is not None]
    parts = FAMILY_FOLDERS.get(family)
    if parts is None or parts.exporter is None:
        raise NotExportable(f"no transformers export for family {family!r}; exportable: {', '.join(exportable)}")
    given = processor is not None
    processor = processor if given else _source_processor(model)
    copies = isinstance(processor, Processor) and processor.source_folder is not None
    if processor is not None and parts.processor_exporter is None and not copies:
        if given:
            raise NotExportable(f"processor: exporting a {type(processor).__name__} for family {family!r} is not "
                                "implemented (a LLaVA's processor, or any processor read from a Hugging Face folder)")
        processor = None  # e.g. a vlmzoo word tokenizer of a family transformers has no word-level layout for
    folder = parts.exporter(model, folder)
    if processor is not None:
        if parts.processor_exporter is not None:
            parts.processor_exporter(model, folder, processor)
        else:
            processor.save_pretrained(folder)
    return folder


SAVE_FORMATS["transformers"] = lambda model, folder, processor=None: save_for_transformers(model, folder, processor)
