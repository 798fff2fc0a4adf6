"""CLIP and SigLIP processors, as transformers' `CLIPProcessor` / `SiglipProcessor`: images and texts
are processed independently (a dual encoder scores every text against every image, so there is no
image placeholder in the text); the folder's own tokenizer and image processor do the work."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vlmzoo.families.processing.base import Processor, as_text_list, split_text_kwargs
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import ImageProcessor
from vlmzoo.families.processing.tokenizer import load_hf_tokenizer


class DualEncoderProcessor(Processor):
    """`processor(text=[...], images=[...], return_tensors="pt", padding=True)` -> input_ids,
    attention_mask (when the tokenizer gives one), pixel_values. SigLIP checkpoints are trained on
    padding="max_length", as transformers' documentation says: pass it as with transformers."""

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "DualEncoderProcessor":
        folder = Path(folder)
        return cls(ImageProcessor.from_pretrained(folder), load_hf_tokenizer(folder))

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        text_kwargs = split_text_kwargs(kwargs)
        if images is None and text is None:
            raise ValueError(f"{type(self).__name__}: pass images, text or both")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenize(as_text_list(text), **text_kwargs))
        if images is not None:
            data["pixel_values"] = self.process_images(images)
        return BatchFeature(data, tensor_type=return_tensors)
