"""BLIP-2 and InstructBLIP (EVA ViT + Q-Former + OPT or Llama), and OPT alone: Hugging Face layout both
ways, processors."""
from vlmzoo.families.blip2.convert import convert_blip2, convert_instructblip
from vlmzoo.families.blip2.export import save_blip2_for_transformers
from vlmzoo.families.blip2.processor import Blip2Processor, InstructBlipProcessor
from vlmzoo.families.common.opt import convert_opt
from vlmzoo.families.parts import FamilyParts

FAMILY = FamilyParts(
    "blip2", converters={"blip-2": convert_blip2, "instructblip": convert_instructblip, "opt": convert_opt},
    exporter=save_blip2_for_transformers,
    processors={"Blip2Processor": Blip2Processor.from_pretrained,
                "InstructBlipProcessor": InstructBlipProcessor.from_pretrained},
    model_type_processors={"blip-2": "Blip2Processor", "instructblip": "InstructBlipProcessor"})

__all__ = ["FAMILY", "Blip2Processor", "InstructBlipProcessor", "convert_blip2", "convert_instructblip",
           "save_blip2_for_transformers"]
