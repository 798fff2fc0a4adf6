"""IDEFICS's processor (transformers' IdeficsProcessor, processing_idefics.py): interleaved prompts of text and
images -> input_ids, attention_mask, pixel_values [batch, images, 3, size, size], image_attention_mask
[batch, tokens, images].

Facts from the reference: every prompt starts with the BOS text; an image is written
`<fake_token_around_image><image><fake_token_around_image>` (only `<image><fake_token_around_image>` right
after another image); `<end_of_utterance>` goes between two texts in a row when the tokenizer knows it; the
text is tokenized without special tokens, padded to the longest; rows get zero images up to the batch's
most; a token reads the latest <image> at or before it, and nothing after an EOS until the next image.
Images are resized to size x size (bicubic), rescaled and normalised with CLIP's mean and std, no crop."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vlmzoo.families.processing.base import Processor, split_text_kwargs
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, ImageProcessor
from vlmzoo.families.processing.tokenizer import load_hf_tokenizer

FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE = "<fake_token_around_image>", "<image>", "<end_of_utterance>"


def idefics_image_processor(config: dict[str, Any]) -> ImageProcessor:
    """IdeficsImageProcessor's preprocessing from its saved config (`image_size` is the older spelling of size)."""
    size = config.get("size") or {}
    side = int(config.get("image_size") or size.get("height") or 224)
    return ImageProcessor(image_processor_type="IdeficsImageProcessor", do_convert_rgb=True, do_resize=True,
                          size={"height": side, "width": side},
                          resample=int(config.get("resample", Image.Resampling.BICUBIC)), do_center_crop=False,
                          do_rescale=config.get("do_rescale", True), rescale_factor=config.get("rescale_factor", 1 / 255),
                          do_normalize=config.get("do_normalize", True),
                          image_mean=tuple(config.get("image_mean") or OPENAI_CLIP_MEAN),
                          image_std=tuple(config.get("image_std") or OPENAI_CLIP_STD))


def image_attention_mask(input_ids: torch.Tensor, image_token_id: int, eos_token_id: int | None, images: int) -> torch.Tensor:
    """[batch, tokens, images]: one-hot of the latest image at or before each token; zeros before the first
    image, after an EOS (until the next image) and for images past `images`."""
    mask = torch.zeros(*input_ids.shape, images, dtype=torch.long)
    for row in range(input_ids.size(0)):
        latest, after_eos = -1, False
        for t, token in enumerate(input_ids[row].tolist()):
            if token == image_token_id:
                latest, after_eos = latest + 1, False
            if 0 <= latest < images and not after_eos:
                mask[row, t, latest] = 1
            if token == eos_token_id:
                after_eos = True
    return mask


class IdeficsProcessor(Processor):
    def __init__(self, image_processor: ImageProcessor, tokenizer: Any, add_end_of_utterance_token: bool | None = None):
        super().__init__(image_processor, tokenizer)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"IdeficsProcessor: the tokenizer has no {IMAGE_TOKEN} token")
        special = getattr(tokenizer, "additional_special_tokens", None) or []
        self.add_end_of_utterance_token = (END_OF_UTTERANCE in special if add_end_of_utterance_token is None
                                           else add_end_of_utterance_token)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "IdeficsProcessor":
        folder = Path(folder)
        config: dict[str, Any] = {}
        if (folder / PREPROCESSOR_CONFIG).is_file():
            config = json.loads((folder / PREPROCESSOR_CONFIG).read_text())
        elif (folder / PROCESSOR_CONFIG).is_file():
            config = json.loads((folder / PROCESSOR_CONFIG).read_text()).get("image_processor") or {}
        return cls(idefics_image_processor(config), load_hf_tokenizer(folder))

    def __call__(self, images: Any = None, text: Sequence[Any] | None = None, return_tensors: str | None = "pt",
                 add_eos_token: bool = False, **kwargs: Any) -> BatchFeature:
        """text: one prompt or a batch of prompts, each a list of strings and images (PIL, arrays, tensors) in
        order; or text as plain strings with `images` one list per prompt (placed after its text)."""
        text_kwargs = {"padding": "longest", **split_text_kwargs(kwargs), "add_special_tokens": False}
        prompts = self._prompts(images, text)
        size = self.image_processor.size["height"]
        texts, row_images = [], []
        for sample in prompts:
            full, pictures, last_was_image = self.tokenizer.bos_token, [], False
            for i, item in enumerate(sample):
                last_was_text = i > 0 and not last_was_image
                if isinstance(item, str):
                    if item.strip(" ").startswith(("http://", "https://")):
                        raise ValueError(f"text: {item.strip()!r}: vlmzoo never downloads; pass the image itself")
                    if self.add_end_of_utterance_token and last_was_text:
                        full += END_OF_UTTERANCE
                    full += item.strip(" ")
                    last_was_image = False
                else:
                    full += IMAGE_TOKEN + FAKE_TOKEN if last_was_image else FAKE_TOKEN + IMAGE_TOKEN + FAKE_TOKEN
                    pictures.append(item)
                    last_was_image = True
            if add_eos_token:
                full += self.tokenizer.eos_token
            texts.append(full)
            row_images.append([torch.from_numpy(np.asarray(a)) for a in self.process_images(pictures)] if pictures else [])
        encoded = self.tokenizer(texts, return_tensors="pt", return_token_type_ids=False, **text_kwargs)
        input_ids = encoded["input_ids"]
        most = max(1, max(len(r) for r in row_images))
        pixel_values = torch.zeros(len(prompts), most, 3, size, size)
        for row, pictures in enumerate(row_images):
            # A row keeps at most as many images as it has <image> tokens (the reference's rule).
            keep = pictures[: min(len(pictures), int((input_ids[row] == self.image_token_id).sum()))]
            for j, picture in enumerate(keep):
                pixel_values[row, j] = picture
        if any(row_images):
            mask = image_attention_mask(input_ids, self.image_token_id, self.tokenizer.eos_token_id, most)
        else:
            mask = torch.zeros(*input_ids.shape, 1, dtype=torch.bool)
        data = {"input_ids": input_ids, "attention_mask": encoded["attention_mask"], "pixel_values": pixel_values,
                "image_attention_mask": mask}
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _prompts(images: Any, text: Any) -> list[list[Any]]:
        if text is None:
            raise ValueError("IdeficsProcessor: pass text (prompts of strings and images)")
        if images is not None:  # text strings, images per prompt after them
            texts = [text] if isinstance(text, str) else list(text)
            per_prompt = [images] if len(texts) == 1 and not isinstance(images, (list, tuple)) else list(images)
            return [[t, *(i if isinstance(i, (list, tuple)) else [i])] for t, i in zip(texts, per_prompt)]
        if isinstance(text, str):
            return [[text]]
        items = list(text)
        return [list(p) for p in items] if any(isinstance(p, (list, tuple)) for p in items) else [items]
