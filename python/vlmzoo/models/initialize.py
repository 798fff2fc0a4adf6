"""Seeded weight initialisation for training from scratch, as transformers' `_init_weights`.

libtorch's defaults make an embedding table N(0, 1): the ViT's position embeddings then drown
the patch content and a random model ignores the image for thousands of steps. N(0, 0.02) for
every matrix and embedding, zero biases and unit norms (GPT-2/CLIP/Llama's recipe) fixes that;
the C++ model applies it when built, and this re-applies it from a seed.
"""
from __future__ import annotations

from vlmzoo.models.model import Model

INIT_STD = 0.02


def init_weights(model: Model, std: float = INIT_STD, seed: int = 0) -> Model:
    """Re-initialises `model` in place, reproducibly from `seed`: norms 1/0, biases 0, everything
    else N(0, std). The C++ constructor applies the same recipe from torch's global generator."""
    model._module.initialize_weights(std, seed)
    return model
