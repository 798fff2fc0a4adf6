"""Families on the Python side, a folder each (llava/, blip2/, clip/): checkpoint layouts both ways
(Hugging Face -> vlmzoo converters, vlmzoo -> transformers exporters) and processors, registered in
registry.py. Shared pieces: common/ (key rules, Llama/OPT/BERT/ViT layouts, export helpers) and
processing/ (image processor, tokenizer loading, vlmzoo's own word processor). Loading
(`from_pretrained`) and `AutoProcessor` look a folder's model type up through the family data."""
from vlmzoo.families import export  # noqa: F401  (registers save_pretrained(format="transformers"))
from vlmzoo.families import sources  # noqa: F401  (registers checkpoint folders as slot sources)
from vlmzoo.families.auto import AutoProcessor
from vlmzoo.families.blip2 import Blip2Processor, InstructBlipProcessor
from vlmzoo.families.clip import DualEncoderProcessor
from vlmzoo.families.llava import LlavaProcessor
from vlmzoo.families.loading import from_pretrained
from vlmzoo.families.processing.base import Processor
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_inputs import load_image_file
from vlmzoo.families.processing.image_processor import ImageProcessor
from vlmzoo.families.processing.word import WordProcessor

__all__ = ["AutoProcessor", "BatchFeature", "Blip2Processor", "DualEncoderProcessor", "ImageProcessor",
           "InstructBlipProcessor", "LlavaProcessor", "Processor", "WordProcessor", "from_pretrained",
           "load_image_file"]
