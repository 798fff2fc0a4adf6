"""The processor of vlmzoo's own checkpoints and presets: the word tokenizer of the built-in tasks
and the tower's normalisation, laid out as training lays out a row (<bos> <image>*n question).

Images get CLIP's recipe at the tower's size (shortest edge to image_size, centre crop): on the
square images of the built-in tasks that is exactly the plain resize training used."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from vlmzoo.config.presets import resolve_config
from vlmzoo.data import NORMALIZATIONS, SPECIAL_TOKENS, WordTokenizer, make_task
from vlmzoo.data.tokenizer import IMAGE_TOKEN
from vlmzoo.families.processing.base import Processor, as_text_list
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import ImageProcessor
from vlmzoo.models.checkpoint import VLMZOO_CONFIG
from vlmzoo.models.info import visual_tokens_per_image

TOKENIZER_FILE = "vlmzoo_tokenizer.json"  # written beside checkpoints by vlmzoo.train


class WordTokenizerAdapter:
    """A WordTokenizer with the names transformers' tokenizers use (decode(skip_special_tokens=...), *_token_id)."""

    def __init__(self, tokenizer: WordTokenizer):
        self.word_tokenizer = tokenizer
        self.bos_token_id, self.eos_token_id = tokenizer.bos_id, tokenizer.eos_id
        self.pad_token_id, self.image_token_id = tokenizer.pad_id, tokenizer.image_id
        self.bos_token, self.image_token = SPECIAL_TOKENS[tokenizer.bos_id], IMAGE_TOKEN
        self.chat_template = None

    def __len__(self) -> int:
        return len(self.word_tokenizer)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.word_tokenizer.encode(text)
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.word_tokenizer.decode(ids, skip_special=skip_special_tokens)

    def batch_decode(self, rows: Any, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]


def image_processor_for(config: Mapping[str, Any]) -> ImageProcessor:
    vision = config["vision"]
    size = int(vision.get("image_size", 224))
    mean, std = NORMALIZATIONS.get(vision.get("style", "clip"), NORMALIZATIONS["clip"])
    return ImageProcessor(size={"shortest_edge": size}, do_center_crop=True, crop_size={"height": size, "width": size},
                          image_mean=tuple(mean), image_std=tuple(std))


class WordProcessor(Processor):
    """`processor(images=..., text="what colour is the circle ?")` -> the row training would build."""

    def __init__(self, config: Mapping[str, Any], tokenizer: WordTokenizer):
        super().__init__(image_processor_for(config), WordTokenizerAdapter(tokenizer))
        self.image_token = IMAGE_TOKEN
        self.image_token_id = tokenizer.image_id
        self.visual_tokens_per_image = visual_tokens_per_image(dict(config))

    @classmethod
    def from_pretrained(cls, target: str | Path) -> "WordProcessor":
        """A vlmzoo checkpoint folder (vlmzoo_config.json, vlmzoo_tokenizer.json when training wrote
        one), or a preset/JSON config; without a tokenizer file, the built-in shapes vocabulary."""
        folder = Path(target)
        if folder.is_dir():
            config = json.loads((folder / VLMZOO_CONFIG).read_text())
            if (folder / TOKENIZER_FILE).is_file():
                return cls(config, WordTokenizer.from_dict(json.loads((folder / TOKENIZER_FILE).read_text())))
        else:
            config = resolve_config(str(target))
        return cls(config, make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer)

    def save_pretrained(self, folder: str | Path) -> Path:
        """vlmzoo_tokenizer.json, which from_pretrained reads back beside a vlmzoo checkpoint's config
        (save_pretrained(format="transformers") of a LLaVA writes the transformers files instead)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TOKENIZER_FILE).write_text(json.dumps(self.tokenizer.word_tokenizer.to_dict()))
        return folder

    def _row(self, prompt: str, images_left: int) -> tuple[list[int], int]:
        """(ids, images used): <bos> then the text, each <image> expanded; with no placeholder and an
        image left, the image goes first as in training."""
        words = self.tokenizer.word_tokenizer
        ids = words.encode(prompt)
        if self.image_token_id not in ids and images_left:
            ids = [self.image_token_id] + ids
        used = ids.count(self.image_token_id)
        expanded = [t for i in ids for t in ([i] * self.visual_tokens_per_image if i == self.image_token_id else [i])]
        return [words.bos_id] + expanded, used

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 padding: bool | str = False, **kwargs: Any) -> BatchFeature:
        """Rows are left-padded (padding=True) as vlmzoo's generate expects."""
        kwargs.pop("add_special_tokens", None)  # a template-written BOS does not arise: no chat template
        if kwargs:
            raise TypeError(f"unexpected processor arguments {sorted(kwargs)}")
        pixel_values = self.process_images(images) if images is not None else []
        data: dict[str, Any] = {}
        if text is not None:
            rows, used = [], 0
            for prompt in as_text_list(text):
                row, n = self._row(prompt, len(pixel_values) - used)
                rows.append(row)
                used += n
            if used != len(pixel_values):
                raise ValueError(f"WordProcessor: the text takes {used} images but {len(pixel_values)} were passed; "
                                 f"put one {IMAGE_TOKEN} per image (a prompt without one takes one image first)")
            length = max(len(r) for r in rows)
            if padding and padding != "do_not_pad":
                pad = self.tokenizer.pad_token_id
                data["attention_mask"] = [[0] * (length - len(r)) + [1] * len(r) for r in rows]
                rows = [[pad] * (length - len(r)) + r for r in rows]
            else:
                data["attention_mask"] = [[1] * len(r) for r in rows]
            data = {"input_ids": rows, **data}
        if images is not None:
            data["pixel_values"] = pixel_values
        return BatchFeature(data, tensor_type=return_tensors)
