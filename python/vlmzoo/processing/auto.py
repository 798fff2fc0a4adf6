"""`AutoProcessor.from_pretrained(folder)`: the processor a checkpoint folder declares."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .base import Processor
from .blip2 import Blip2Processor, InstructBlipProcessor
from .dual_encoder import DualEncoderProcessor
from .image_processor import PREPROCESSOR_CONFIG, PROCESSOR_CONFIG
from .llava import LlavaProcessor
from .word import WordProcessor

PROCESSOR_CLASSES: dict[str, Callable[[Path], Processor]] = {
    "LlavaProcessor": LlavaProcessor.from_pretrained,
    "Blip2Processor": Blip2Processor.from_pretrained,
    "InstructBlipProcessor": InstructBlipProcessor.from_pretrained,
    "CLIPProcessor": DualEncoderProcessor.from_pretrained,
    "SiglipProcessor": DualEncoderProcessor.from_pretrained,
}
# config.json model_type -> processor class, for folders that do not name their processor.
MODEL_TYPE_PROCESSORS = {"llava": "LlavaProcessor", "blip-2": "Blip2Processor", "instructblip": "InstructBlipProcessor",
                         "clip": "CLIPProcessor", "siglip": "SiglipProcessor"}


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
    def from_pretrained(folder: str | Path) -> Processor:
        """folder: a Hugging Face checkpoint (LLaVA, BLIP-2, InstructBLIP, CLIP, SigLIP), a vlmzoo checkpoint
        (vlmzoo_config.json), or a vlmzoo preset name / JSON config (built-in word tokenizer)."""
        from ..convert.checkpoint import VLMZOO_CONFIG

        path = Path(folder)
        if not path.is_dir() or (path / VLMZOO_CONFIG).is_file():
            return WordProcessor.from_pretrained(folder)
        from ..families.beit3 import Beit3Processor, is_torchscale_folder  # BEiT-3: config.json of EncoderConfig

        if is_torchscale_folder(path):
            return Beit3Processor.from_pretrained(path)
        name, where = _declared_processor(path)
        if name is None:
            raise FileNotFoundError(f"{path}: no {PROCESSOR_CONFIG}, {PREPROCESSOR_CONFIG}, config.json or {VLMZOO_CONFIG}")
        if name not in PROCESSOR_CLASSES:
            raise ValueError(f"{where}: processor {name!r} is not supported; supported: {', '.join(PROCESSOR_CLASSES)}")
        return PROCESSOR_CLASSES[name](path)
