"""Processors: images (PIL, numpy, torch, paths) and text -> a model's inputs, as transformers' do."""
from .auto import AutoProcessor
from .base import Processor
from .batch_feature import BatchFeature
from .blip2 import Blip2Processor, InstructBlipProcessor
from .dual_encoder import DualEncoderProcessor
from .image_inputs import load_image_file
from .image_processor import ImageProcessor
from .llava import LlavaProcessor
from .word import WordProcessor

__all__ = ["AutoProcessor", "BatchFeature", "Blip2Processor", "DualEncoderProcessor", "ImageProcessor", "InstructBlipProcessor",
           "LlavaProcessor", "Processor", "WordProcessor", "load_image_file"]
