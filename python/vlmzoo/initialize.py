"""Weight initialisation for training from scratch, as transformers' `_init_weights` does it.

The C++ modules start from libtorch's defaults, where an embedding table is N(0, 1): the ViT's
position embeddings then drown the patch content (std ~0.04 x sqrt(patch pixels)), and a
randomly initialised model ignores the image for thousands of steps. N(0, 0.02) for every
matrix and embedding, zero biases and unit norms (GPT-2/CLIP/Llama's recipe) fixes that.
"""
from __future__ import annotations

import torch

from .model import Model

INIT_STD = 0.02


def is_norm(name: str) -> bool:
    """A LayerNorm/RMSNorm parameter: `vision.layers.0.norm1.weight`, `llm.norm.weight`."""
    parts = name.split(".")
    return len(parts) >= 2 and "norm" in parts[-2]


@torch.no_grad()
def init_weights(model: Model, std: float = INIT_STD, seed: int = 0, slots: tuple[str, ...] | None = None) -> Model:
    """Re-initialises `model` in place (all slots, or `slots`): norms 1/0, biases 0, everything else N(0, std)."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if slots is not None and name.split(".", 1)[0] not in slots:
            continue
        if is_norm(name):
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return model
