"""A checkpoint folder's own tokenizer, loaded offline through transformers' AutoTokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def has_hf_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_hf_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in `folder` (tokenizer.json, tokenizer_config.json, ...); never downloads."""
    folder = Path(folder)
    if not has_hf_tokenizer(folder):
        raise FileNotFoundError(f"{folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    try:  # inside: transformers is optional (the reference extra) and slow to import
        from transformers import AutoTokenizer
    except ImportError as error:
        raise ImportError("reading a Hugging Face folder's tokenizer needs transformers: "
                          "pip install 'vlmzoo[reference]' (or transformers tokenizers)") from error
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def add_image_token(tokenizer: Any, token: str = "<image>") -> str:
    """Makes `token` one special token of `tokenizer` (a no-op when it already is), as BLIP-2's
    processor does for tokenizers that have no image token; returns the token's text."""
    from tokenizers import AddedToken  # inside: tokenizers is optional (the reference extra)

    tokenizer.add_tokens([AddedToken(token, normalized=False, special=True)], special_tokens=True)
    return token
