"""`AutoProcessor.from_pretrained(folder)`: the processor a checkpoint folder declares."""
from __future__ import annotations

import json
from pathlib import Path

from vlmzoo.config.sources import HUB_ID
from vlmzoo.families.loading import local_folder
from vlmzoo.families.processing.base import Processor
from vlmzoo.families.processing.image_processor import PREPROCESSOR_CONFIG, PROCESSOR_CONFIG
from vlmzoo.families.processing.word import WordProcessor
from vlmzoo.families.registry import MODEL_TYPE_PROCESSORS, PROCESSOR_CLASSES, folder_processor
from vlmzoo.models.checkpoint import VLMZOO_CONFIG


def _declared_processor(folder: Path) -> tuple[str | None, str]:
    """(processor class name, where it was read) from the folder's JSON files."""
    for name, key in ((PROCESSOR_CONFIG, "processor_class"), (PREPROCESSOR_CONFIG, "processor_class"),
                      ("tokenizer_config.json", "processor_class")):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if value:
                return value, f"{path}: {key}"
    config = folder / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        return MODEL_TYPE_PROCESSORS.get(model_type, model_type), f"{config}: model_type {model_type!r}"
    return None, str(folder)


class AutoProcessor:
    """Picks the processor class from the folder, as transformers' AutoProcessor does, offline."""

    @staticmethod
    def from_pretrained(folder: str | Path, revision: str | None = None) -> Processor:
        """folder: a Hugging Face checkpoint (LLaVA, BLIP-2, InstructBLIP, CLIP, SigLIP) or its Hub id (read as
        vlmzoo.from_pretrained reads it), a vlmzoo checkpoint (vlmzoo_config.json), or a vlmzoo preset name /
        JSON config (built-in word tokenizer)."""
        path = Path(folder)
        if isinstance(folder, str) and HUB_ID.match(folder) and not path.exists():
            path = folder = local_folder(folder, revision)
        if not path.is_dir() or (path / VLMZOO_CONFIG).is_file():
            return WordProcessor.from_pretrained(folder)
        by_files = folder_processor(path)  # a layout known by its files (BEiT-3: config.json of EncoderConfig)
        if by_files is not None:
            return by_files(path)
        name, where = _declared_processor(path)
        if name is None:
            raise FileNotFoundError(f"{path}: no {PROCESSOR_CONFIG}, {PREPROCESSOR_CONFIG}, config.json or {VLMZOO_CONFIG}")
        if name not in PROCESSOR_CLASSES:
            raise ValueError(f"{where}: processor {name!r} is not supported; supported: {', '.join(PROCESSOR_CLASSES)}")
        processor = PROCESSOR_CLASSES[name](path)
        processor.source_folder = path
        return processor
