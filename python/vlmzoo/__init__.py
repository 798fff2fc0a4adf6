"""vlmzoo: vision-language models assembled in C++ from JSON configs, used from Python.

The package is layered (pyproject.toml's import-linter contract checks it); this file is the public
face over all of them: data -> config -> models -> families -> training -> study -> cli."""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from vlmzoo import _C
from vlmzoo.version import __version__
from vlmzoo.config import towers
from vlmzoo.config.presets import families, family, kinds, load_config, presets, resolve_config
from vlmzoo.models.dual_encoder import DualEncoderModel, DualEncoderOutput
from vlmzoo.models.info import info, parameter_counts, forward_flops, visual_tokens_per_image
from vlmzoo.models.model import Model, ModelOutput
from vlmzoo.families import AutoProcessor, from_pretrained
from vlmzoo.training.train import train
from vlmzoo.training.evaluate import evaluate
from vlmzoo.training.pretraining import pretrain
from vlmzoo.training.rows import build
from vlmzoo.config.presets import families  # noqa: E402,F811  (again: importing the vlmzoo.families package
#                                             above bound the name to the package; the public name is the function)

__all__ = [
    "AutoProcessor", "Model", "ModelOutput", "DualEncoderModel", "DualEncoderOutput", "build", "from_pretrained", "info", "parameter_counts", "forward_flops",
    "visual_tokens_per_image", "load_config", "presets", "resolve_config", "families", "family", "kinds", "train", "evaluate", "compare",
    "pretrain", "towers", "__version__",
]


def __getattr__(name: str):
    # `vlmzoo.compare` loads the study layer (pandas, matplotlib: seconds) on first use, not on `import vlmzoo`.
    if name == "compare":
        from vlmzoo.study.compare import compare

        return compare
    raise AttributeError(f"module 'vlmzoo' has no attribute {name!r}")
