"""BEiT-3 (torchscale layout): checkpoint conversion both ways from one key table, and the processor.
A torchscale folder (one .pth and an EncoderConfig config.json) is known by its files, not a model_type."""
from vlmzoo.families.beit3.layout import (config_from_torchscale, encoder_config_of, from_torchscale, head_of,
                                          is_torchscale_folder, load_torchscale_folder, to_torchscale)
from vlmzoo.families.beit3.processor import Beit3Processor
from vlmzoo.families.parts import FamilyParts

FAMILY = FamilyParts("beit3", converters={}, folder_loader=(is_torchscale_folder, load_torchscale_folder),
                     folder_processor=(is_torchscale_folder, Beit3Processor.from_pretrained))

__all__ = ["Beit3Processor", "FAMILY", "config_from_torchscale", "encoder_config_of", "from_torchscale", "head_of",
           "is_torchscale_folder", "load_torchscale_folder", "to_torchscale"]
