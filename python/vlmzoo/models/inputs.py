"""Checks of a model call's inputs that the shape checks in C++ cannot make: pixel values that are
not normalised floats, or not finite, and token ids of the wrong type or outside the vocabulary.
Each raises a ValueError naming the input and what is wrong, instead of a silent wrong answer."""
from __future__ import annotations

from typing import Any

import torch

_SHOWN = 5  # offending positions listed in a message


def _positions(mask: torch.Tensor) -> str:
    where = mask.nonzero()[:_SHOWN].tolist()
    return ", ".join(str(tuple(p)) if len(p) > 1 else str(p[0]) for p in where)


def check_pixel_values(pixel_values: Any, name: str = "pixel_values") -> None:
    """pixel_values must be a finite floating tensor (normalised images); None passes."""
    if pixel_values is None:
        return
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.is_complex() or not pixel_values.is_floating_point():
        raise ValueError(
            f"{name}: dtype {pixel_values.dtype}; expected floating-point pixels normalised with the vision "
            "tower's mean and std (convert 0-255 images: (x.float() / 255 - mean) / std)"
        )
    finite = torch.isfinite(pixel_values)
    if not bool(finite.all()):
        nan = int(torch.isnan(pixel_values).sum())
        inf = int((~finite).sum()) - nan
        raise ValueError(
            f"{name}: {nan} NaN and {inf} inf values of {pixel_values.numel()} (first at {_positions(~finite)})"
        )


def check_token_ids(ids: Any, vocab: int, name: str = "input_ids") -> None:
    """ids must be an integer tensor with every value in [0, vocab); None passes."""
    if ids is None:
        return
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{name}: dtype {ids.dtype}; token ids must be integers (torch.long)")
    if ids.numel() == 0:
        return
    outside = (ids < 0) | (ids >= vocab)
    if bool(outside.any()):
        values = ids[outside]
        raise ValueError(
            f"{name}: {int(outside.sum())} token ids outside the vocabulary [0, {vocab}) (llm.vocab): "
            f"values from {int(values.min())} to {int(values.max())}, first at {_positions(outside)}"
        )
