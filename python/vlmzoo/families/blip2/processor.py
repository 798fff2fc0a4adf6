"""BLIP-2 and InstructBLIP processors, as transformers' `Blip2Processor` / `InstructBlipProcessor`:
the Q-Former's num_query_tokens image tokens go first in every row, before the tokenizer's BOS,
and InstructBLIP also tokenizes the text for the Q-Former (qformer_input_ids, qformer_attention_mask)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from vlmzoo.families.processing.base import Processor, as_text_list, split_text_kwargs
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import PROCESSOR_CONFIG, ImageProcessor
from vlmzoo.families.processing.tokenizer import add_image_token, load_hf_tokenizer


def _num_query_tokens(folder: Path) -> int | None:
    for name in (PROCESSOR_CONFIG, "config.json"):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("num_query_tokens")
            if value is not None:
                return int(value)
    return None


class Blip2Processor(Processor):
    def __init__(self, image_processor: ImageProcessor, tokenizer: Any, num_query_tokens: int | None):
        super().__init__(image_processor, tokenizer)
        self.image_token = getattr(tokenizer, "image_token", None) or add_image_token(tokenizer)
        self.num_query_tokens = num_query_tokens

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Blip2Processor":
        folder = Path(folder)
        return cls(ImageProcessor.from_pretrained(folder), load_hf_tokenizer(folder), _num_query_tokens(folder))

    def _language_inputs(self, prompts: list[str], with_images: bool, text_kwargs: dict[str, Any]) -> dict[str, list]:
        """input_ids/attention_mask of the prompts, num_query_tokens image tokens prepended to each row."""
        if text_kwargs.get("max_length") is not None and self.num_query_tokens is not None:
            text_kwargs = {**text_kwargs, "max_length": text_kwargs["max_length"] - self.num_query_tokens}
        encoded = self.tokenize(prompts, **text_kwargs)
        if with_images and self.num_query_tokens is not None:
            image_part = self.tokenize([self.image_token * self.num_query_tokens], add_special_tokens=False)
            encoded = {k: [image_part[k][0] + row for row in rows] for k, rows in encoded.items()}
        return encoded

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        text_kwargs = split_text_kwargs(kwargs)
        if images is None and text is None:
            raise ValueError(f"{type(self).__name__}: pass images, text or both")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self._text_inputs(as_text_list(text), images is not None, text_kwargs))
        if images is not None:
            data["pixel_values"] = self.process_images(images)
        return BatchFeature(data, tensor_type=return_tensors)

    def _text_inputs(self, prompts: list[str], with_images: bool, text_kwargs: dict[str, Any]) -> dict[str, list]:
        return self._language_inputs(prompts, with_images, text_kwargs)


class InstructBlipProcessor(Blip2Processor):
    def __init__(self, image_processor: ImageProcessor, tokenizer: Any, qformer_tokenizer: Any,
                 num_query_tokens: int | None):
        super().__init__(image_processor, tokenizer, num_query_tokens)
        self.qformer_tokenizer = qformer_tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "InstructBlipProcessor":
        folder = Path(folder)
        return cls(ImageProcessor.from_pretrained(folder), load_hf_tokenizer(folder),
                   load_hf_tokenizer(folder / "qformer_tokenizer"), _num_query_tokens(folder))

    def _text_inputs(self, prompts: list[str], with_images: bool, text_kwargs: dict[str, Any]) -> dict[str, list]:
        # The Q-Former reads the instruction too, with its own (BERT) tokenizer and the full max_length.
        qformer = self.qformer_tokenizer(prompts, return_token_type_ids=False, **text_kwargs)
        language = self._language_inputs(prompts, with_images, text_kwargs)
        return {"qformer_input_ids": list(qformer["input_ids"]), "qformer_attention_mask": list(qformer["attention_mask"]),
                **language}
