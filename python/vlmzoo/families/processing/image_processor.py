"""Resize, centre-crop, rescale and normalise images as a checkpoint's preprocessor_config.json says.

Matches transformers' PIL-backend image processors (CLIPImageProcessor, SiglipImageProcessor,
BlipImageProcessor, LlavaImageProcessor) step for step: PIL resampling on uint8 pixels, the same
size rules (shortest edge / fixed height and width), the same crop offsets, the float64 rescale
then float32 cast, and normalisation in float32; so pixel_values come out identical.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from math import ceil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_inputs import to_channels_first_list

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

# Each class's defaults, for fields a saved config leaves out (transformers' class attributes).
_CLIP_LIKE = dict(size={"shortest_edge": 224}, default_to_square=False, crop_size={"height": 224, "width": 224},
                  do_center_crop=True, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "CLIPImageProcessor": _CLIP_LIKE,
    "LlavaImageProcessor": {**_CLIP_LIKE, "do_pad": False},
    "SiglipImageProcessor": dict(size={"height": 224, "width": 224}, default_to_square=False,
                                 image_mean=HALF, image_std=HALF),
    "BlipImageProcessor": dict(size={"height": 384, "width": 384}, default_to_square=True,
                               image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD),
}
# Older folders name the class differently (feature extractors, backend suffixes).
_CLASS_ALIASES = {"CLIPFeatureExtractor": "CLIPImageProcessor"}
PREPROCESSOR_CONFIG = "preprocessor_config.json"
PROCESSOR_CONFIG = "processor_config.json"


def _canonical_class(name: str) -> str:
    name = _CLASS_ALIASES.get(name, name)
    for suffix in ("Fast", "Pil"):
        if name.endswith(suffix) and name[: -len(suffix)] in CLASS_DEFAULTS:
            return name[: -len(suffix)]
    return name


def _size_dict(value: Any, default_to_square: bool, where: str) -> dict[str, int]:
    """transformers' get_size_dict: an int is a square or a shortest edge, a pair is (height, width)."""
    if isinstance(value, Mapping):
        size = {k: int(v) for k, v in value.items() if v is not None}
    elif isinstance(value, int):
        size = {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        size = {"height": int(value[0]), "width": int(value[1])}
    else:
        raise ValueError(f"{where}: expected an int, [height, width] or a dict, got {value!r}")
    if not ({"height", "width"} <= set(size) or "shortest_edge" in size):
        raise ValueError(f"{where}: {size} has neither height and width nor shortest_edge "
                         "(max_height/max_width and longest_edge alone are not supported)")
    return size


def _triple(value: Any, where: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3
    if len(values) != 3:
        raise ValueError(f"{where}: expected 3 values (RGB), got {len(values)}")
    return values


def resized_height_width(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """Output (height, width) of the resize step for a `size` dict."""
    if "shortest_edge" in size and "longest_edge" in size:  # get_size_with_aspect_ratio
        target, max_size = size["shortest_edge"], size["longest_edge"]
        raw = None
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * target > max_size:
            raw = max_size * short / long
            target = int(round(raw))
        if (height <= width and height == target) or (width <= height and width == target):
            return height, width
        scale_from = raw if raw is not None else target
        if width < height:
            return int(scale_from * height / width), target
        return target, int(scale_from * width / height)
    if "shortest_edge" in size:  # torchvision's Resize(int): the short side to the size, the long one floored
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return size["height"], size["width"]


def _needs_scaling_for_pil(image: np.ndarray) -> bool:
    """Whether a float image in [0, 1] must be scaled to [0, 255] to become a uint8 PIL image."""
    if image.dtype == np.uint8:
        return False
    if np.allclose(image, image.astype(int)):
        if np.all(image >= 0) and np.all(image <= 255):
            return False
        raise ValueError(f"image values outside [0, 255] ([{image.min()}, {image.max()}]) cannot be resized as pixels")
    if np.all(image >= 0) and np.all(image <= 1):
        return True
    raise ValueError(f"float image values outside [0, 1] ([{image.min()}, {image.max()}]) cannot be resized as pixels")


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    # Upcast first so uint8 * float is exact, then cast to float32 (as transformers does).
    return (image.astype(np.float64) * factor).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """[C, H, W] -> [C, height, width] through a uint8 PIL image."""
    scaled = _needs_scaling_for_pil(image)
    last = np.moveaxis(image, 0, -1)
    last = last[..., 0] if last.shape[-1] == 1 else last
    pixels = (rescale(last, 255) if scaled else last).astype(np.uint8)
    resized = np.array(Image.fromarray(pixels).resize((width, height), resample=Image.Resampling(resample)))
    resized = resized[..., None] if resized.ndim == 2 else resized
    resized = np.moveaxis(resized, -1, 0)
    return rescale(resized, 1 / 255) if scaled else resized


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, H, W] -> [C, height, width] around the centre; a smaller image is zero-padded first."""
    orig_h, orig_w = image.shape[-2:]
    top, left = (orig_h - height) // 2, (orig_w - width) // 2
    if top >= 0 and left >= 0:
        return image[..., top : top + height, left : left + width]
    new_h, new_w = max(height, orig_h), max(width, orig_w)
    padded = np.zeros_like(image, shape=image.shape[:-2] + (new_h, new_w))
    pad_top, pad_left = ceil((new_h - orig_h) / 2), ceil((new_w - orig_w) / 2)
    padded[..., pad_top : pad_top + orig_h, pad_left : pad_left + orig_w] = image
    top, left = top + pad_top, left + pad_left
    return padded[..., max(0, top) : min(new_h, top + height), max(0, left) : min(new_w, left + width)]


def pad_to_square(image: np.ndarray, background: tuple[int, ...]) -> np.ndarray:
    """[C, H, W] -> [C, S, S], S = max(H, W), the image centred on a background colour (LLaVA's pad)."""
    channels, height, width = image.shape
    if height == width:
        return image
    side = max(height, width)
    result = np.zeros((channels, side, side), dtype=image.dtype)
    for c, colour in enumerate(background[:channels]):
        result[c] = colour
    if width > height:
        start = (side - height) // 2
        result[:, start : start + height, :] = image
    else:
        start = (side - width) // 2
        result[:, :, start : start + width] = image
    return result


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(image - mean) / std per channel, in float32 unless the image is already floating."""
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    mean_array = np.asarray(mean, dtype=image.dtype)[:, None, None]
    std_array = np.asarray(std, dtype=image.dtype)[:, None, None]
    return (image - mean_array) / std_array


@dataclass(frozen=True)
class ImageProcessor:
    """One checkpoint's image preprocessing; call it on images to get {"pixel_values": ...}."""

    image_processor_type: str = "CLIPImageProcessor"
    do_convert_rgb: bool = True
    do_pad: bool = False
    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = Image.Resampling.BICUBIC
    do_center_crop: bool = False
    crop_size: dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], where: str = PREPROCESSOR_CONFIG) -> "ImageProcessor":
        """From a preprocessor_config.json dict; fields it leaves out take its class's defaults."""
        declared = config.get("image_processor_type") or config.get("feature_extractor_type")
        kind = _canonical_class(declared or "CLIPImageProcessor")
        if kind not in CLASS_DEFAULTS:
            raise ValueError(f"{where}: image_processor_type {declared!r} is not supported; "
                             f"supported: {', '.join(CLASS_DEFAULTS)}")
        merged = {**CLASS_DEFAULTS[kind], **{k: v for k, v in config.items() if v is not None}}
        square = bool(merged.pop("default_to_square", True))
        values: dict[str, Any] = {"image_processor_type": kind}
        for f in fields(cls):
            if f.name in merged and f.name != "image_processor_type":
                values[f.name] = merged[f.name]
        values["size"] = _size_dict(merged.get("size", {"height": 224, "width": 224}), square, f"{where}: size")
        if merged.get("crop_size") is not None:
            values["crop_size"] = _size_dict(merged["crop_size"], True, f"{where}: crop_size")
        if values.get("do_center_crop") and values.get("crop_size") is None:
            raise ValueError(f"{where}: do_center_crop is true but crop_size is missing")
        values["image_mean"] = _triple(merged["image_mean"], f"{where}: image_mean")
        values["image_std"] = _triple(merged["image_std"], f"{where}: image_std")
        values["resample"] = int(values.get("resample", Image.Resampling.BICUBIC))
        return cls(**values)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "ImageProcessor":
        """From preprocessor_config.json, or the "image_processor" entry of processor_config.json
        (where transformers 5 saves it)."""
        folder = Path(folder)
        if (folder / PREPROCESSOR_CONFIG).is_file():
            return cls.from_dict(json.loads((folder / PREPROCESSOR_CONFIG).read_text()), str(folder / PREPROCESSOR_CONFIG))
        if (folder / PROCESSOR_CONFIG).is_file():
            config = json.loads((folder / PROCESSOR_CONFIG).read_text())
            if isinstance(config.get("image_processor"), Mapping):
                return cls.from_dict(config["image_processor"], f"{folder / PROCESSOR_CONFIG}: image_processor")
        raise FileNotFoundError(f"{folder}: no {PREPROCESSOR_CONFIG} and no image_processor in {PROCESSOR_CONFIG}")

    def to_dict(self) -> dict[str, Any]:
        """The preprocessor_config.json dict that from_dict (and transformers' image processor) reads back."""
        config = asdict(self)
        config["image_mean"], config["image_std"] = list(config["image_mean"]), list(config["image_std"])
        config["feature_extractor_type"] = config["image_processor_type"].replace("ImageProcessor", "FeatureExtractor")
        return config  # (feature_extractor_type: read by transformers 4.x)

    def with_options(self, **options: Any) -> "ImageProcessor":
        """A copy with some fields changed (e.g. do_center_crop=False)."""
        return replace(self, **options)

    def output_height_width(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of pixel_values for an input of this size."""
        if self.do_pad:
            height = width = max(height, width)
        if self.do_resize:
            height, width = resized_height_width(height, width, self.size)
        if self.do_center_crop:
            height, width = self.crop_size["height"], self.crop_size["width"]
        return height, width

    def preprocess_one(self, image: np.ndarray) -> np.ndarray:
        """[C, H, W] pixels (uint8 or float) -> processed [C, h, w] array."""
        if self.do_pad:
            image = pad_to_square(image, tuple(int(x * 255) for x in self.image_mean))
        if self.do_resize:
            image = resize(image, *resized_height_width(*image.shape[-2:], self.size), self.resample)
        if self.do_center_crop:
            image = center_crop(image, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:
            image = rescale(image, self.rescale_factor)
        if self.do_normalize:
            image = normalize(image, self.image_mean, self.image_std)
        return image

    def __call__(self, images: Any, return_tensors: str | None = "pt"):
        """images: one or many (PIL, numpy, torch, paths) -> BatchFeature {"pixel_values": [N, 3, h, w]}."""
        arrays = [self.preprocess_one(a) for a in to_channels_first_list(images, self.do_convert_rgb)]
        return BatchFeature({"pixel_values": arrays}, tensor_type=return_tensors)
