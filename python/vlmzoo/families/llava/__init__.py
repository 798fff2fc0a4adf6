"""LLaVA (CLIP or SigLIP vision + projector + Llama), and Llama alone: Hugging Face layout both ways, processor."""
from vlmzoo.families.common.llama import convert_llama
from vlmzoo.families.llava.convert import convert_llava, llava_config, llava_state_dict
from vlmzoo.families.llava.export import llava_hf_config, llava_hf_state_dict, save_llava_for_transformers
from vlmzoo.families.llava.processor import LlavaProcessor
from vlmzoo.families.llava.processor_export import save_llava_processor_for_transformers
from vlmzoo.families.parts import FamilyParts

FAMILY = FamilyParts(
    "llava", converters={"llava": convert_llava, "llama": convert_llama}, exporter=save_llava_for_transformers,
    processors={"LlavaProcessor": LlavaProcessor.from_pretrained}, model_type_processors={"llava": "LlavaProcessor"},
    processor_exporter=save_llava_processor_for_transformers)

__all__ = ["FAMILY", "LlavaProcessor", "convert_llava", "llava_config", "llava_hf_config", "llava_hf_state_dict",
           "llava_state_dict", "save_llava_for_transformers"]
