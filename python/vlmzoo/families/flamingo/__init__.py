"""The flamingo family (IDEFICS v1, OpenFlamingo): checkpoint layouts both ways and the processor."""
from vlmzoo.families.flamingo.idefics import convert_idefics, idefics_hf_config, save_idefics_for_transformers
from vlmzoo.families.flamingo.processor import IdeficsProcessor
from vlmzoo.families.parts import FamilyParts

FAMILY = FamilyParts(
    "flamingo", converters={"idefics": convert_idefics}, exporter=save_idefics_for_transformers,
    processors={"IdeficsProcessor": IdeficsProcessor.from_pretrained}, model_type_processors={"idefics": "IdeficsProcessor"})

__all__ = ["FAMILY", "IdeficsProcessor", "convert_idefics", "idefics_hf_config", "save_idefics_for_transformers"]
