"""Real photographs shipped inside scikit-image, for demos that need no download."""
from __future__ import annotations

import numpy as np
from PIL import Image

# Images bundled with the scikit-image wheel (no network fetch), by their skimage.data function name.
SAMPLE_IMAGE_NAMES = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
)


def sample_image(name: str, size: int = 224) -> Image.Image:
    """skimage.data.<name>() as an RGB PIL image, centre-cropped to a square and resized to size x size."""
    if name not in SAMPLE_IMAGE_NAMES:
        raise ValueError(f"sample_image: unknown name {name!r}; expected one of {list(SAMPLE_IMAGE_NAMES)}")
    import skimage.data  # imported lazily: only demos need it

    pixels = np.asarray(getattr(skimage.data, name)())
    image = Image.fromarray(pixels).convert("RGB")  # grayscale images (camera, moon, ...) become 3 channels
    # Centre crop first: vision towers expect squares, and squashing a 3:2 photo distorts it.
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BICUBIC)


def sample_images(size: int = 224, names: tuple[str, ...] = SAMPLE_IMAGE_NAMES) -> dict[str, Image.Image]:
    """{name: image} for each of `names` (all bundled images by default)."""
    return {name: sample_image(name, size) for name in names}
