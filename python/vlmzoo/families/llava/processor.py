"""LLaVA's processor: each image placeholder in the text becomes as many image tokens as the
vision tower gives visual tokens, as transformers' `LlavaProcessor` does.

visual tokens = (height // patch) * (width // patch) + num_additional_image_tokens (the CLS, for CLIP),
minus one when vision_feature_select_strategy is "default" (the CLS is dropped again).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from vlmzoo.families.processing.base import Processor, as_text_list, read_chat_template, split_text_kwargs
from vlmzoo.families.processing.batch_feature import BatchFeature
from vlmzoo.families.processing.image_processor import PREPROCESSOR_CONFIG, PROCESSOR_CONFIG, ImageProcessor
from vlmzoo.families.processing.tokenizer import load_hf_tokenizer


class LlavaProcessor(Processor):
    def __init__(self, image_processor: ImageProcessor, tokenizer: Any, patch_size: int,
                 vision_feature_select_strategy: str = "default", num_additional_image_tokens: int = 0,
                 image_token: str = "<image>", chat_template: str | None = None):
        super().__init__(image_processor, tokenizer, chat_template)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"LlavaProcessor: patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = patch_size
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.num_additional_image_tokens = num_additional_image_tokens
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        self.image_token_id = tokenizer.encode(self.image_token, add_special_tokens=False)[0]

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "LlavaProcessor":
        """From processor_config.json (patch_size, vision_feature_select_strategy, ...); a folder that
        predates those fields takes them from its config.json (vision_config.patch_size; CLIP's CLS)."""
        folder = Path(folder)
        options = _read_json(folder / PROCESSOR_CONFIG)
        if options.get("patch_size") is None:
            options = {**_options_from_model_config(_read_json(folder / "config.json")), **options}
            if options.get("patch_size") is None:
                raise ValueError(f"{folder}: no patch_size in {PROCESSOR_CONFIG} nor vision_config.patch_size in config.json")
        return cls(
            ImageProcessor.from_pretrained(folder), load_hf_tokenizer(folder), patch_size=int(options["patch_size"]),
            vision_feature_select_strategy=options.get("vision_feature_select_strategy") or "default",
            num_additional_image_tokens=int(options.get("num_additional_image_tokens") or 0),
            image_token=options.get("image_token") or "<image>", chat_template=read_chat_template(folder),
        )

    def save_pretrained(self, folder: str | Path) -> Path:
        """The files transformers' AutoProcessor reads as a LlavaProcessor (and vlmzoo's AutoProcessor as
        this one): the tokenizer's own files, preprocessor_config.json, processor_config.json and the chat
        template."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        (folder / PREPROCESSOR_CONFIG).write_text(json.dumps(self.image_processor.to_dict(), indent=2) + "\n")
        (folder / PROCESSOR_CONFIG).write_text(json.dumps({
            "processor_class": "LlavaProcessor", "patch_size": self.patch_size,
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "num_additional_image_tokens": self.num_additional_image_tokens, "image_token": self.image_token,
        }, indent=2) + "\n")
        if self.chat_template is not None:
            (folder / "chat_template.jinja").write_text(self.chat_template)
        return folder

    def image_tokens(self, height: int, width: int) -> int:
        """Image tokens for a [3, height, width] pixel_values entry."""
        tokens = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return tokens - 1 if self.vision_feature_select_strategy == "default" else tokens

    def __call__(self, images: Any = None, text: str | Sequence[str] | None = None, return_tensors: str | None = None,
                 **kwargs: Any) -> BatchFeature:
        """images (PIL, numpy, torch or paths; one per placeholder, in order) and text with one
        `image_token` per image -> input_ids, attention_mask, pixel_values [images, 3, h, w]."""
        text_kwargs = split_text_kwargs(kwargs)
        if images is None and text is None:
            raise ValueError("LlavaProcessor: pass images, text or both")
        pixel_values = self.process_images(images) if images is not None else []
        data: dict[str, Any] = {}
        if text is not None:
            prompts = as_text_list(text)
            placeholders = sum(p.count(self.image_token) for p in prompts)
            if placeholders != len(pixel_values):
                raise ValueError(f"LlavaProcessor: the text has {placeholders} {self.image_token} placeholders "
                                 f"but {len(pixel_values)} images were passed; put one {self.image_token} per image")
            expansions = iter(self.image_token * self.image_tokens(*p.shape[-2:]) for p in pixel_values)
            pattern = re.escape(self.image_token)
            prompts = [re.sub(pattern, lambda _: next(expansions), p) for p in prompts]
            data.update(self.tokenize(prompts, **text_kwargs))
        if images is not None:
            data["pixel_values"] = pixel_values
        return BatchFeature(data, tensor_type=return_tensors)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _options_from_model_config(config: Mapping[str, Any]) -> dict[str, Any]:
    vision = config.get("vision_config") or {}
    has_cls = vision.get("model_type", "clip_vision_model") == "clip_vision_model"
    return {
        "patch_size": vision.get("patch_size"),
        "vision_feature_select_strategy": config.get("vision_feature_select_strategy", "default"),
        "num_additional_image_tokens": 1 if has_cls else 0,
    }
