"""The dict a processor returns: keys as attributes, tensors of the asked kind, `.to(...)` like transformers'."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

TENSOR_TYPES = ("pt", "np", None)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], np.ndarray):
        shapes = {v.shape for v in value}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack arrays of different shapes {sorted(shapes)} into one tensor; "
                             "pass images that come out the same size, or return_tensors=None")
        return np.stack(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        lengths = sorted({len(row) for row in value})
        if len(lengths) > 1:
            raise ValueError(f"cannot make a tensor from rows of lengths {lengths}; pass padding=True")
    return np.asarray(value)


class BatchFeature(dict):
    """{input_ids, attention_mask, pixel_values, ...}; `batch.input_ids` works as `batch["input_ids"]`."""

    def __init__(self, data: dict[str, Any] | None = None, tensor_type: str | None = None):
        if tensor_type not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={tensor_type!r}: expected 'pt', 'np' or None")
        super().__init__()
        for key, value in (data or {}).items():
            if tensor_type == "pt":
                value = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(_as_array(value)))
            elif tensor_type == "np":
                value = value.numpy() if isinstance(value, torch.Tensor) else _as_array(value)
            self[key] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchFeature has no key {name!r}; keys: {list(self)}") from None

    def to(self, *args: Any, **kwargs: Any) -> "BatchFeature":
        """Moves every tensor (`.to("cuda")`); a dtype (`.to(torch.bfloat16)`) casts only floating tensors,
        so token ids stay integers."""
        dtype_only = (len(args) == 1 and isinstance(args[0], torch.dtype) and not kwargs) or (
            not args and set(kwargs) == {"dtype"})
        for key, value in self.items():
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or not dtype_only):
                if value.is_floating_point():
                    self[key] = value.to(*args, **kwargs)
                else:  # ids and masks keep their dtype; only the device changes
                    device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
                    self[key] = value.to(device) if device is not None else value
        return self
