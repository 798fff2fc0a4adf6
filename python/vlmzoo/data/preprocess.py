"""Turns PIL images into the normalised pixel tensor a vision tower reads."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

# Per-channel RGB statistics the vision towers were trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "siglip": (SIGLIP_MEAN, SIGLIP_STD)}


def images_to_tensor(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """Images -> float32 pixel_values [N, 3, size, size], (pixel / 255 - mean) / std per channel.

    Images not already size x size are resized (bicubic) without cropping.
    """
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"images_to_tensor: mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        return torch.empty(0, 3, size, size)
    # One fused affine pass in numpy: x * scale + shift == (x / 255 - mean) / std, cheaper than torch on small batches.
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(1, 3, 1, 1)
    shift = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    pixels = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32, order="C")  # [N, 3, S, S], contiguous copy
    pixels *= scale
    pixels += shift
    return torch.from_numpy(pixels)
