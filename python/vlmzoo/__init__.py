"""vlmzoo: vision-language models assembled in C++ from JSON configs, used from Python."""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C
from .loading import from_pretrained
from .info import info, parameter_counts, forward_flops, visual_tokens_per_image
from .model import Model, ModelOutput, build
from .processing import AutoProcessor
from .dual_encoder import DualEncoderModel, DualEncoderOutput
from .train import train
from .evaluate import evaluate
from .compare import compare
from .pretraining import pretrain
from . import towers
from .presets import families, family, kinds, load_config, presets, resolve_config

__all__ = [
    "AutoProcessor", "Model", "ModelOutput", "DualEncoderModel", "DualEncoderOutput", "build", "from_pretrained", "info", "parameter_counts", "forward_flops",
    "visual_tokens_per_image", "load_config", "presets", "resolve_config", "families", "family", "kinds", "train", "evaluate", "compare",
    "pretrain", "towers",
]
__version__ = "0.1.0"
