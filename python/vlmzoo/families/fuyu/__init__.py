"""Fuyu: Hugging Face FuyuForCausalLM folders both ways (checkpoint.py) and FuyuProcessor's layout (processor.py)."""
from vlmzoo.families.fuyu.checkpoint import convert_fuyu, fuyu_config, fuyu_hf_config, save_fuyu_for_transformers
from vlmzoo.families.fuyu.processor import FuyuImagePatches, FuyuProcessor
from vlmzoo.families.parts import FamilyParts

FAMILY = FamilyParts(
    "fuyu", converters={"fuyu": convert_fuyu}, exporter=save_fuyu_for_transformers,
    processors={"FuyuProcessor": FuyuProcessor.from_pretrained}, model_type_processors={"fuyu": "FuyuProcessor"})

__all__ = ["FAMILY", "FuyuImagePatches", "FuyuProcessor", "convert_fuyu", "fuyu_config", "fuyu_hf_config",
           "save_fuyu_for_transformers"]
