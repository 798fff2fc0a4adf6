"""The dual encoders CLIP and SigLIP (two families, one layout): Hugging Face layout both ways, processor."""
from vlmzoo.families.clip.convert import convert_clip, convert_siglip
from vlmzoo.families.clip.export import save_dual_for_transformers
from vlmzoo.families.clip.processor import DualEncoderProcessor
from vlmzoo.families.parts import FamilyParts

CLIP = FamilyParts(
    "clip", converters={"clip": convert_clip}, exporter=save_dual_for_transformers,
    processors={"CLIPProcessor": DualEncoderProcessor.from_pretrained}, model_type_processors={"clip": "CLIPProcessor"})
SIGLIP = FamilyParts(
    "siglip", converters={"siglip": convert_siglip}, exporter=save_dual_for_transformers,
    processors={"SiglipProcessor": DualEncoderProcessor.from_pretrained},
    model_type_processors={"siglip": "SiglipProcessor"})

__all__ = ["CLIP", "SIGLIP", "DualEncoderProcessor", "convert_clip", "convert_siglip", "save_dual_for_transformers"]
