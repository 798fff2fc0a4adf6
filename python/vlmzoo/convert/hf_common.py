"""Pieces every Hugging Face converter shares: activation names, token ids, and key rules
(regex tables over slot-relative names)."""
from __future__ import annotations

import re
from typing import Any, Sequence

# transformers' activation names -> vlmzoo's.
ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "silu": "silu", "swish": "silu", "relu": "relu", "relu2": "relu2"}

Rules = Sequence[tuple[str, str]]


def activation(name: str, where: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"{where}: activation {name!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def first_id(value: Any, fallback: int) -> int:
    """A token id from a config field that may be None, an int or a list of ints (the first counts)."""
    if value is None:
        return fallback
    return int(value[0] if isinstance(value, list) else value)


def rename(rules: Rules, name: str) -> str | None:
    """The vlmzoo name of a slot-relative Hugging Face name: the first rule whose pattern matches; None if none does."""
    for pattern, replacement in rules:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None
