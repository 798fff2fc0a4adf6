"""A vlmzoo processor -> the files transformers' AutoProcessor reads as a LlavaProcessor:
preprocessor_config.json (CLIPImageProcessor), processor_config.json, and the tokenizer
(tokenizer.json + tokenizer_config.json). vlmzoo's word tokenizer is rebuilt as a `tokenizers`
WordLevel tokenizer that splits and lowercases text exactly as it does."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmzoo.data import WordTokenizer
from vlmzoo.data.tokenizer import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN
from vlmzoo.families.llava.processor import LlavaProcessor
from vlmzoo.families.processing.word import WordProcessor, image_processor_for

# The word tokenizer's split (data/tokenizer.py) minus its special-token alternative: those are added tokens here.
_WORD_PATTERN = r"\w+|[^\w\s]"


def word_tokenizer_json(tokenizer: Any) -> str:
    """tokenizer.json text for a vlmzoo WordTokenizer: same ids, same split, <bos> prepended."""
    # inside: tokenizers is optional (the reference extra); only this export needs it
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {tokenizer.id_to_token(i): i for i in range(len(tokenizer))}
    hf = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    hf.normalizer = normalizers.Lowercase()
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="isolated")])
    hf.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    hf.post_processor = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A",
                                                      special_tokens=[(BOS_TOKEN, tokenizer.bos_id)])
    return hf.to_str(pretty=True)


def _save_word_tokenizer(tokenizer: Any, folder: Path) -> None:
    (folder / "tokenizer.json").write_text(word_tokenizer_json(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN, "pad_token": PAD_TOKEN, "padding_side": "left", "image_token": IMAGE_TOKEN,
        "model_max_length": 1 << 30,
    }, indent=2) + "\n")


def save_llava_processor_for_transformers(model: Any, folder: str | Path, processor: Any) -> Path:
    """processor: a vlmzoo WordProcessor or LlavaProcessor (from AutoProcessor), or a WordTokenizer."""
    folder = Path(folder)
    vision = model.config["vision"]
    image_token = "<image>"
    if isinstance(processor, WordTokenizer):
        processor = WordProcessor(model.config, processor)
    if isinstance(processor, LlavaProcessor):
        return processor.save_pretrained(folder)
    if not isinstance(processor, WordProcessor):
        raise TypeError(f"processor: expected a vlmzoo WordProcessor, LlavaProcessor or WordTokenizer, "
                        f"got {type(processor).__name__}")
    _save_word_tokenizer(processor.tokenizer.word_tokenizer, folder)
    image_processor = image_processor_for(model.config)
    (folder / "preprocessor_config.json").write_text(json.dumps(image_processor.to_dict(), indent=2) + "\n")
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaProcessor",
        "patch_size": vision["patch_size"],
        "vision_feature_select_strategy": vision.get("select", "default"),
        # The CLS token counts as an image token before "default" drops it again.
        "num_additional_image_tokens": 1 if vision.get("class_token", True) else 0,
        "image_token": image_token,
    }, indent=2) + "\n")
    return folder
