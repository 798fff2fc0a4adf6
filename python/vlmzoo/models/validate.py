"""Loading a checkpoint's tensors into a model's parameters all at once or not at all: every name,
shape, dtype and value is checked before the first parameter is written, so a bad checkpoint
leaves the model exactly as it was."""
from __future__ import annotations

from typing import Any, Mapping

import torch

_LISTED = 20  # names shown per problem before "and N more"


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def describe_key_problems(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): " + _names(missing))
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): " + _names(unexpected))
    return "; ".join(parts)


def _tensor_problem(name: str, value: Any, param: torch.Tensor) -> str | None:
    """Why `value` cannot become `param`'s value, or None."""
    if not isinstance(value, torch.Tensor):
        return f"{name}: a {type(value).__name__}, not a tensor"
    if value.is_meta:
        return f"{name}: a meta tensor without values"
    if value.layout != torch.strided or value.is_quantized:
        return f"{name}: a {value.layout}{' quantized' if value.is_quantized else ''} tensor, not a plain one"
    if tuple(value.shape) != tuple(param.shape):
        return f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(param.shape)}"
    if value.is_complex() or value.is_floating_point() != param.is_floating_point():
        return f"{name}: checkpoint dtype {value.dtype} cannot hold the model's {param.dtype} values"
    return None


def non_finite_counts(tensor: torch.Tensor) -> tuple[int, int]:
    """(NaN count, ±inf count) of a floating tensor; (0, 0) for other dtypes."""
    if not tensor.is_floating_point():
        return 0, 0
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return 0, 0
    nan = int(torch.isnan(tensor).sum())
    return nan, int((~finite).sum()) - nan


def check_state_dict(named_params: Mapping[str, torch.Tensor], tensors: Mapping[str, Any],
                     strict: bool = True) -> tuple[list[str], list[str]]:
    """Raises if `tensors` cannot be loaded into `named_params`; returns (missing, unexpected).

    KeyError: strict and only names are wrong (missing or unexpected keys, listed).
    ValueError: a shape, dtype or non-tensor problem, or non-finite values, each named by tensor."""
    missing = sorted(set(named_params) - set(tensors))
    unexpected = sorted(set(tensors) - set(named_params))
    common = sorted(set(named_params) & set(tensors))
    mismatched = [p for p in (_tensor_problem(k, tensors[k], named_params[k]) for k in common) if p]
    if mismatched:
        message = f"checkpoint tensors do not fit the model ({len(mismatched)}): " + "; ".join(mismatched[:_LISTED])
        if strict and (missing or unexpected):
            message += "; " + describe_key_problems(missing, unexpected)
        raise ValueError(message)
    if strict and (missing or unexpected):
        raise KeyError(describe_key_problems(missing, unexpected))
    check_finite({k: tensors[k] for k in common})
    return missing, unexpected


def check_finite(tensors: Mapping[str, torch.Tensor], what: str = "checkpoint tensors hold") -> None:
    """ValueError naming every tensor with NaN or ±inf values, with its counts."""
    bad = []
    for k, t in tensors.items():
        nan, inf = non_finite_counts(t)
        if nan or inf:
            bad.append(f"{k} ({nan} NaN, {inf} inf of {t.numel()})")
    if bad:
        raise ValueError(f"{what} non-finite values ({len(bad)}): " + _names(bad))


def load_into(named_params: Mapping[str, torch.Tensor], tensors: Mapping[str, Any],
              strict: bool = True) -> tuple[list[str], list[str]]:
    """Copies `tensors` into `named_params` (the model's own tensors, written in place) after checking
    all of them (see check_state_dict); returns (missing, unexpected). Values needing a dtype or
    device change are converted into fresh tensors first, so the copies themselves cannot fail half-way."""
    missing, unexpected = check_state_dict(named_params, tensors, strict)
    common = sorted(set(named_params) & set(tensors))
    ready = {k: tensors[k].to(device=named_params[k].device, dtype=named_params[k].dtype) for k in common}
    # A narrower dtype (float32 -> float16) turns values beyond its range into inf.
    check_finite({k: ready[k] for k in common if ready[k].dtype != tensors[k].dtype},
                 "checkpoint tensors overflow the model's dtype: they hold")
    with torch.no_grad():
        for k in common:
            named_params[k].copy_(ready[k])
    return missing, unexpected
