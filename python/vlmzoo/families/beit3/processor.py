"""BEiT-3's processor: images resized to img_size x img_size (bicubic, no crop) and normalised with
mean = std = 0.5, as unilm beit3's evaluation transforms (Resize((size, size), interpolation=3),
IMAGENET_INCEPTION_MEAN / STD); texts through the folder's tokenizer (tokenizer.json & co., or
beit3.spm read as XLMRobertaTokenizer, which needs sentencepiece), or vlmzoo's word tokenizer
(vlmzoo_tokenizer.json); <s> ... </s>, padded on the right, as BEiT-3 is trained."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from vlmzoo.data.tokenizer import WordTokenizer
from vlmzoo.families.processing.base import Processor, as_text_list, split_text_kwargs
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import ImageProcessor
from vlmzoo.families.processing.tokenizer import has_hf_tokenizer, load_hf_tokenizer
from vlmzoo.families.processing.word import TOKENIZER_FILE, WordTokenizerAdapter

SENTENCEPIECE_FILE = "beit3.spm"
# BEiT-3 fine-tuning transforms: IMAGENET_INCEPTION_MEAN / STD.
BEIT3_MEAN = (0.5, 0.5, 0.5)
BEIT3_STD = (0.5, 0.5, 0.5)


def beit3_image_processor(image_size: int) -> ImageProcessor:
    return ImageProcessor(image_processor_type="BeitImageProcessor", size={"height": image_size, "width": image_size},
                          resample=Image.Resampling.BICUBIC, do_center_crop=False, image_mean=BEIT3_MEAN,
                          image_std=BEIT3_STD)


class WordTextTokenizer(WordTokenizerAdapter):
    """The word tokenizer called as a transformers tokenizer: <bos> words <eos>, right padding."""

    def __call__(self, texts: list[str], padding: bool | str = True, return_token_type_ids: bool = False,
                 **kwargs: Any) -> dict[str, list[list[int]]]:
        words = self.word_tokenizer
        rows = [[words.bos_id, *words.encode(t), words.eos_id] for t in texts]
        length = max(len(r) for r in rows) if padding and padding != "do_not_pad" else 0
        return {"input_ids": [r + [words.pad_id] * (length - len(r)) for r in rows],
                "attention_mask": [[1] * len(r) + [0] * (length - len(r)) for r in rows]}


def load_text_tokenizer(folder: Path) -> Any:
    if has_hf_tokenizer(folder):
        return load_hf_tokenizer(folder)
    if (folder / SENTENCEPIECE_FILE).is_file():
        try:
            from transformers import XLMRobertaTokenizer

            return XLMRobertaTokenizer(str(folder / SENTENCEPIECE_FILE))
        except ImportError as error:
            raise ImportError(f"{folder / SENTENCEPIECE_FILE}: BEiT-3's sentencepiece model needs transformers and "
                              "sentencepiece (pip install sentencepiece)") from error
    if (folder / TOKENIZER_FILE).is_file():
        return WordTextTokenizer(WordTokenizer.from_dict(json.loads((folder / TOKENIZER_FILE).read_text())))
    raise FileNotFoundError(f"{folder}: no tokenizer (tokenizer.json / tokenizer_config.json, {SENTENCEPIECE_FILE} "
                            f"or {TOKENIZER_FILE})")


class Beit3Processor(Processor):
    """`processor(images=..., text=..., return_tensors="pt")` -> input_ids, attention_mask, pixel_values."""

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Beit3Processor":
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        return cls(beit3_image_processor(int(config.get("img_size", 224))), load_text_tokenizer(folder))

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        text_kwargs = split_text_kwargs(kwargs)
        if images is None and text is None:
            raise ValueError("Beit3Processor: pass images, text or both")
        data: dict[str, Any] = {}
        if text is not None:
            text_kwargs.setdefault("padding", True)
            data.update(self.tokenize(as_text_list(text), **text_kwargs))
        if images is not None:
            data["pixel_values"] = self.process_images(images)
        return BatchFeature(data, tensor_type=return_tensors)
