"""Images as users hold them (PIL, numpy, torch tensors, file paths) -> channels-first numpy arrays.

Follows transformers' PIL backend (`PilBackend.process_image`, `load_image`) so that the arrays,
and so the pixel values, are the ones its processors would make: a path is opened, EXIF-rotated
and converted to RGB; a PIL image with transparency is composited onto white; an array's channel
axis is found as transformers finds it (first axis of size 1, 3 or 4 wins, else the last).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

CHANNEL_COUNTS = (1, 3, 4)


def load_image_file(path: str | Path) -> Image.Image:
    """An image file as transformers' `load_image` reads it: EXIF orientation applied, RGB."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def _is_tensor(image: Any) -> bool:
    return type(image).__module__.startswith("torch") and hasattr(image, "numpy")


def is_single_image(image: Any) -> bool:
    """True for one image (a PIL image, a path, a 2-D or 3-D array/tensor), False for a batch."""
    if isinstance(image, (Image.Image, str, Path)):
        return True
    if isinstance(image, np.ndarray) or _is_tensor(image):
        return image.ndim <= 3
    return False


def flat_image_list(images: Any) -> list[Any]:
    """One image, a list of images, a list of lists (one per prompt) or a 4-D batch -> a flat list."""
    if is_single_image(images):
        return [images]
    if isinstance(images, np.ndarray) or _is_tensor(images):
        if images.ndim != 4:
            raise ValueError(f"images: expected a [height, width], [channels, height, width] or "
                             f"[batch, channels, height, width] array, got shape {tuple(images.shape)}")
        return list(images)
    if isinstance(images, (list, tuple)):
        return [single for item in images for single in flat_image_list(item)]
    raise TypeError(f"images: expected PIL images, numpy arrays, torch tensors or file paths, got {type(images).__name__}")


def channel_axis(array: np.ndarray) -> int:
    """0 or 2 for a 3-D image: the axis holding 1, 3 or 4 channels (the first when both could)."""
    if array.ndim != 3:
        raise ValueError(f"image array: expected 3 dimensions, got shape {tuple(array.shape)}")
    if array.shape[0] in CHANNEL_COUNTS:
        return 0
    if array.shape[2] in CHANNEL_COUNTS:
        return 2
    raise ValueError(f"image array of shape {tuple(array.shape)}: no axis of 1, 3 or 4 channels "
                     "(expected [channels, height, width] or [height, width, channels])")


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8; transparency composited onto white, as transformers' convert_to_rgb does."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(image.convert("RGB"))


def _array_to_rgb_last(array: np.ndarray) -> np.ndarray:
    """[H, W, C] with C in {1, 3, 4} -> [H, W, 3]: grey repeated, alpha composited onto white."""
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 4:
        floating = np.issubdtype(array.dtype, np.floating)
        if floating and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"RGBA image: float values must lie in [0, 1], got [{array.min()}, {array.max()}]")
        white = 1.0 if floating else 255
        alpha = array[..., 3:4] / white
        blended = alpha * array[..., :3] + (1 - alpha) * white
        return blended.astype(array.dtype) if floating else np.round(blended).astype(array.dtype)
    return array


def to_channels_first(image: Any, convert_rgb: bool = True) -> np.ndarray:
    """One image -> [channels, height, width] numpy array (uint8 stays uint8, floats stay floats)."""
    if isinstance(image, (str, Path)):
        image = load_image_file(image)
    if isinstance(image, Image.Image):
        array = _pil_to_rgb(image) if convert_rgb else np.array(image)
        return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if _is_tensor(image):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a PIL image, numpy array, torch tensor or file path, got {type(image).__name__}")
    if image.ndim == 2:  # grey [H, W]
        image = image[None]
    axis = channel_axis(image)
    last = np.moveaxis(image, axis, -1)
    if convert_rgb:
        last = _array_to_rgb_last(last)
    return np.moveaxis(last, -1, 0)


def to_channels_first_list(images: Any, convert_rgb: bool = True) -> list[np.ndarray]:
    return [to_channels_first(image, convert_rgb) for image in flat_image_list(images)]

