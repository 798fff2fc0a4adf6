"""Fuyu's processor, as transformers' `FuyuProcessor` (with `FuyuImageProcessor`) lays its output out.

Per image: shrink to fit `size` (1080 x 1920) keeping the aspect ratio, only when larger (PIL bilinear,
int(side * scale)); pad at the bottom and right to whole patches with `padding_value` (in 0-255 pixel
units, before rescaling); rescale by 1/255, normalise with mean 0.5 and std 0.5; cut into 30 x 30 patches
in raster order, each flattened as (patch_h, patch_w, channels).
Per text: the image's placeholders first, `|SPEAKER|` per patch and `|NEWLINE|` closing each row of
patches, then `<s>`, then the text and `<0x04>` (the beginning of the answer) tokenised without special
tokens; rows are padded on the left with id 0.
Output: input_ids, attention_mask [batch, tokens], image_patches [all patches of the batch, p*p*3]
(transformers 5.x's concatenated form; the model splices them at the |SPEAKER| positions in order)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vlmzoo.families.processing.base import Processor, as_text_list
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_inputs import flat_image_list, to_channels_first
from vlmzoo.families.processing.image_processor import PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, normalize, rescale, resize
from vlmzoo.families.processing.tokenizer import load_hf_tokenizer

IMAGE_TOKEN, NEWLINE_TOKEN, BEGIN_ANSWER, BOS = "|SPEAKER|", "|NEWLINE|", "<0x04>", "<s>"


def _height_width(value: Any, default: tuple[int, int], where: str) -> tuple[int, int]:
    if value is None:
        return default
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{where}: expected {{'height': h, 'width': w}}, got {value!r}")


def _mean_or_std(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3


class FuyuImagePatches:
    """FuyuImageProcessor's numbers: images -> (patches [P, p*p*C] float32, rows, cols) each."""

    def __init__(self, size: tuple[int, int] = (1080, 1920), patch_size: tuple[int, int] = (30, 30),
                 do_resize: bool = True, resample: int = Image.Resampling.BILINEAR, do_pad: bool = True,
                 padding_value: float = 1.0, do_rescale: bool = True, rescale_factor: float = 1 / 255,
                 do_normalize: bool = True, image_mean: Sequence[float] = (0.5,) * 3,
                 image_std: Sequence[float] = (0.5,) * 3):
        self.size, self.patch_size = size, patch_size
        self.do_resize, self.resample, self.do_pad, self.padding_value = do_resize, int(resample), do_pad, padding_value
        self.do_rescale, self.rescale_factor = do_rescale, rescale_factor
        self.do_normalize, self.image_mean, self.image_std = do_normalize, tuple(image_mean), tuple(image_std)

    @classmethod
    def from_dict(cls, config: dict[str, Any], where: str) -> "FuyuImagePatches":
        kwargs: dict[str, Any] = {
            "size": _height_width(config.get("size"), (1080, 1920), f"{where}: size"),
            "patch_size": _height_width(config.get("patch_size"), (30, 30), f"{where}: patch_size"),
        }
        for key in ("do_resize", "do_pad", "do_rescale", "do_normalize"):
            if config.get(key) is not None:
                kwargs[key] = bool(config[key])
        for key in ("padding_value", "rescale_factor"):
            if config.get(key) is not None:
                kwargs[key] = float(config[key])
        if config.get("resample") is not None:
            kwargs["resample"] = int(config["resample"])
        for key in ("image_mean", "image_std"):
            if config.get(key) is not None:
                kwargs[key] = _mean_or_std(config[key])
        return cls(**kwargs)

    def __call__(self, image: Any) -> tuple[torch.Tensor, int, int]:
        array = to_channels_first(image)  # [C, H, W], uint8 stays uint8
        ph, pw = self.patch_size
        height, width = array.shape[-2:]
        max_h, max_w = self.size
        if self.do_resize and (height > max_h or width > max_w):
            scale = min(max_h / height, max_w / width)
            array = resize(array, int(height * scale), int(width * scale), self.resample)
            height, width = array.shape[-2:]
        # Whole patches: padded up to them, but never past the padded canvas `size` (transformers' min()).
        canvas_h, canvas_w = (max(max_h, height), max(max_w, width)) if self.do_pad else (height, width)
        new_h, new_w = min(canvas_h, math.ceil(height / ph) * ph), min(canvas_w, math.ceil(width / pw) * pw)
        if new_h % ph or new_w % pw:
            raise ValueError(f"image of {height} x {width} pixels: {new_h} x {new_w} is not whole {ph} x {pw} patches "
                             "(do_pad is false, or size is no multiple of patch_size)")
        if new_h < ph or new_w < pw:
            raise ValueError(f"image of {height} x {width} pixels gives no whole {ph} x {pw} patch")
        if new_h > height or new_w > width:
            array = np.pad(array, ((0, 0), (0, new_h - height), (0, new_w - width)), mode="constant",
                           constant_values=self.padding_value)
        array = array[:, :new_h, :new_w]
        if self.do_rescale:
            array = rescale(array, self.rescale_factor)
        if self.do_normalize:
            array = normalize(array, self.image_mean, self.image_std)
        rows, cols, channels = new_h // ph, new_w // pw, array.shape[0]
        patches = array.reshape(channels, rows, ph, cols, pw).transpose(1, 3, 2, 4, 0).reshape(rows * cols, -1)
        return torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)), rows, cols


class FuyuProcessor(Processor):
    """`processor(images=..., text=..., return_tensors="pt")` -> input_ids, attention_mask, image_patches."""

    def __init__(self, image_processor: FuyuImagePatches, tokenizer: Any, chat_template: str | None = None):
        super().__init__(image_processor, tokenizer, chat_template)
        vocab = tokenizer.get_vocab()
        missing = [t for t in (IMAGE_TOKEN, NEWLINE_TOKEN, BOS) if t not in vocab]
        if missing:
            raise ValueError(f"FuyuProcessor: the tokenizer has no {', '.join(missing)} token")
        self.image_token_id, self.newline_token_id, self.bos_token_id = (vocab[t] for t in (IMAGE_TOKEN, NEWLINE_TOKEN, BOS))
        self.padding_id = 0  # transformers' FuyuProcessor pads with 0 whatever the tokenizer says

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "FuyuProcessor":
        folder = Path(folder)
        config, where = {}, str(folder / PREPROCESSOR_CONFIG)
        if (folder / PREPROCESSOR_CONFIG).is_file():
            config = json.loads((folder / PREPROCESSOR_CONFIG).read_text())
        elif (folder / PROCESSOR_CONFIG).is_file():
            config = json.loads((folder / PROCESSOR_CONFIG).read_text()).get("image_processor") or {}
            where = f"{folder / PROCESSOR_CONFIG}: image_processor"
        return cls(FuyuImagePatches.from_dict(config, where), load_hf_tokenizer(folder))

    def image_placeholder_ids(self, rows: int, cols: int) -> list[int]:
        return ([self.image_token_id] * cols + [self.newline_token_id]) * rows + [self.bos_token_id]

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        if kwargs:
            raise TypeError(f"FuyuProcessor: unexpected arguments {sorted(kwargs)}")
        if images is None and text is None:
            raise ValueError("FuyuProcessor: pass images, text or both")
        if images is None:  # text only: the tokenizer's own encoding, special tokens included
            encoded = self.tokenizer(as_text_list(text), padding=True, padding_side="left")
            return BatchFeature({k: list(v) for k, v in encoded.items() if k in ("input_ids", "attention_mask")},
                                tensor_type=return_tensors)
        image_list = flat_image_list(images)
        prompts = as_text_list(text) if text is not None else [""] * len(image_list)
        if len(prompts) != len(image_list):
            raise ValueError(f"FuyuProcessor: {len(prompts)} texts but {len(image_list)} images; Fuyu takes one image "
                             "per text")
        rows, all_patches = [], []
        for prompt, image in zip(prompts, image_list):
            patches, patch_rows, patch_cols = self.image_processor(image)
            all_patches.append(patches)
            words = self.tokenizer(prompt + BEGIN_ANSWER, add_special_tokens=False)["input_ids"]
            rows.append(self.image_placeholder_ids(patch_rows, patch_cols) + list(words))
        length = max(len(r) for r in rows)
        data = {"input_ids": [[self.padding_id] * (length - len(r)) + r for r in rows],
                "attention_mask": [[0] * (length - len(r)) + [1] * len(r) for r in rows]}
        out = BatchFeature(data, tensor_type=return_tensors)
        out["image_patches"] = torch.cat(all_patches, 0) if return_tensors == "pt" else torch.cat(all_patches, 0).numpy()
        return out
