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


def rename(rules: "Rules | KeyTable", name: str) -> str | None:
    """The vlmzoo name of a slot-relative Hugging Face name: the first rule whose pattern matches; None if none does."""
    if isinstance(rules, KeyTable):
        return rules.to_vlmzoo(name)
    for pattern, replacement in rules:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


# Placeholders a key template may hold, each matching one part of a name.
FIELDS = {"i": r"\d+", "wb": r"weight|bias", "qkv": r"q|k|v", "qkvo": r"q|k|v|o", "n": r"1|2", "fc": r"fc1|fc2",
          "gud": r"gate|up|down", "io": r"in|out", "qv": r"q|v"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern:
    parts, last = [], 0
    for m in _PLACEHOLDER.finditer(template):
        parts += [re.escape(template[last:m.start()]), f"(?P<{m.group(1)}>{FIELDS[m.group(1)]})"]
        last = m.end()
    return re.compile("".join(parts + [re.escape(template[last:])]) + "$")


class KeyTable:
    """Key rules written once and read both ways: (Hugging Face template, vlmzoo template) pairs over
    slot-relative names, with placeholders from FIELDS ("encoder.layers.{i}.layer_norm{n}.{wb}" <->
    "layers.{i}.norm{n}.{wb}"). Loading reads it left to right, save_pretrained(format="transformers")
    right to left, so the two directions cannot drift apart. The first matching pair wins."""

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        self.pairs = list(pairs)
        for hf, ours in self.pairs:
            if set(_PLACEHOLDER.findall(hf)) != set(_PLACEHOLDER.findall(ours)):
                raise ValueError(f"key rule {hf!r} <-> {ours!r}: both sides must hold the same placeholders")
        self._hf = [(_compile(hf), ours) for hf, ours in self.pairs]
        self._ours = [(_compile(ours), hf) for hf, ours in self.pairs]

    def __add__(self, other: "KeyTable") -> "KeyTable":
        return KeyTable(self.pairs + other.pairs)

    @staticmethod
    def _apply(rules: list[tuple[re.Pattern, str]], name: str) -> str | None:
        for pattern, target in rules:
            m = pattern.match(name)
            if m:
                return target.format(**m.groupdict())
        return None

    def to_vlmzoo(self, hf_name: str) -> str | None:
        """The vlmzoo name of a slot-relative Hugging Face name; None when no rule knows it."""
        return self._apply(self._hf, hf_name)

    def to_hf(self, name: str) -> str | None:
        """The Hugging Face name of a slot-relative vlmzoo name; None when no rule knows it."""
        return self._apply(self._ours, name)
