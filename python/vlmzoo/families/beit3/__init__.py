"""BEiT-3 (torchscale layout): checkpoint conversion both ways from one key table."""
from .layout import (config_from_torchscale, encoder_config_of, from_torchscale, head_of, is_torchscale_folder,
                     load_torchscale_folder, to_torchscale)

__all__ = ["config_from_torchscale", "encoder_config_of", "from_torchscale", "head_of", "is_torchscale_folder",
           "load_torchscale_folder", "to_torchscale"]
