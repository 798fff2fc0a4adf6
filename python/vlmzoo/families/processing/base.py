"""What every processor shares: the tokenizer, the image processor, the chat template, decoding."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_inputs import flat_image_list, load_image_file

# The files of a Hugging Face folder that make its processor (tokenizer, image processor, chat template).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json")

# Keyword arguments passed on to the tokenizer when a processor is called.
TEXT_KWARGS = ("padding", "truncation", "max_length", "add_special_tokens", "padding_side",
               "return_attention_mask", "pad_to_multiple_of")


def read_chat_template(folder: str | Path) -> str | None:
    """The processor's chat template: chat_template.jinja, chat_template.json, or processor_config.json."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "processor_config.json"):
        if (folder / name).is_file():
            template = json.loads((folder / name).read_text()).get("chat_template")
            if isinstance(template, str):
                return template
    return None


def split_text_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(TEXT_KWARGS))
    if unknown:
        raise TypeError(f"unexpected processor arguments {unknown}; text options are {list(TEXT_KWARGS)}")
    return dict(kwargs)


def as_text_list(text: str | Sequence[str]) -> list[str]:
    if isinstance(text, str):
        return [text]
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return list(text)
    raise ValueError(f"text: expected a string or a list of strings, got {type(text).__name__}")


def _content_images(conversation: list[dict[str, Any]]) -> list[Any]:
    """Images named in a chat's content items: {"type": "image", "image" | "path" | "url": ...}."""
    images = []
    for message in conversation:
        content = message.get("content")
        for item in content if isinstance(content, list) else []:
            if item.get("type") != "image":
                continue
            source = item.get("image", item.get("path", item.get("url")))
            if isinstance(source, str) and source.startswith(("http://", "https://")):
                raise ValueError(f"chat image {source!r}: vlmzoo never downloads; pass a local path or a PIL image")
            if source is not None:
                images.append(load_image_file(source) if isinstance(source, (str, Path)) else source)
    return images


class Processor:
    """Base of the family processors: `processor(images=..., text=..., return_tensors="pt")`."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)

    # The Hugging Face folder this processor was read from (AutoProcessor sets it): save_pretrained writes its files.
    source_folder: Path | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_processor={self.image_processor!r}, tokenizer={type(self.tokenizer).__name__})"

    def save_pretrained(self, folder: str | Path) -> Path:
        """Writes the files transformers' AutoProcessor (and vlmzoo's) reads this processor back from: here
        the processor files of the Hugging Face folder it was read from (LlavaProcessor and WordProcessor
        write theirs from their fields)."""
        if self.source_folder is None:
            raise NotImplementedError(f"{type(self).__name__}.save_pretrained: this processor was not read from a "
                                      "Hugging Face folder, and writing one from its fields is implemented for "
                                      "LlavaProcessor and WordProcessor only")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in PROCESSOR_FILES:
            if (self.source_folder / name).is_file() and (self.source_folder / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.source_folder / name, folder / name)
        return folder

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        raise NotImplementedError

    def process_images(self, images: Any) -> list:
        """[C, h, w] arrays of every image, flattened in the order they appear."""
        return self.image_processor(flat_image_list(images), return_tensors=None)["pixel_values"]

    def tokenize(self, text: list[str], **text_kwargs: Any) -> dict[str, list[list[int]]]:
        encoded = self.tokenizer(text, return_token_type_ids=False, **text_kwargs)
        return {k: list(v) for k, v in encoded.items()}

    # ---- decoding, as the tokenizer does it
    def decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    # ---- chat
    def apply_chat_template(self, conversation: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False, return_dict: bool = False, return_tensors: str | None = "pt",
                            **kwargs: Any) -> Any:
        """The prompt text of a chat (tokenize=False), or with tokenize=True the processed inputs of
        that text and the images its content items name (a dict with return_dict=True, else input_ids)."""
        if self.chat_template is None:
            raise ValueError(f"{type(self).__name__}: this folder has no chat template "
                             "(chat_template.jinja, chat_template.json or in the tokenizer); write the prompt text yourself")
        prompt = self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, tokenize=False,
                                                    add_generation_prompt=add_generation_prompt, **kwargs)
        if not tokenize:
            return prompt
        bos = getattr(self.tokenizer, "bos_token", None)
        images = _content_images(conversation)
        # A template that writes the BOS itself must not get a second one from the tokenizer.
        out = self(images=images or None, text=prompt, return_tensors=return_tensors,
                   add_special_tokens=not (bos is not None and prompt.startswith(bos)))
        return out if return_dict else out["input_ids"]
