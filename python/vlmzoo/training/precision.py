"""Training precision: "float32", or "bf16" (mixed precision: matrix products and attention in bfloat16 with
float32 accumulation, float32 master weights, gradients and optimizer state, as `torch.autocast("cpu",
torch.bfloat16)` does), or "auto" (bf16 where the CPU multiplies bfloat16 natively, float32 elsewhere).

The model's C++ forward calls ATen's matmul / linear / attention through the dispatcher, so torch's CPU
autocast reaches them: `train(..., precision="bf16")` and a step written by hand under `torch.autocast("cpu",
torch.bfloat16)` take the same path. Evaluation always runs in float32 (the weights are float32)."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

PRECISIONS = ("float32", "bf16", "auto")


def cpu_multiplies_bf16() -> bool:
    """True when this CPU has AMX-BF16 tiles or AVX512-BF16 dot products (torch's own detection): bfloat16
    products run natively there; elsewhere autocast would emulate them, slower than float32."""
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


def resolve_precision(precision: str) -> str:
    """"float32" or "bf16": the precision a run will use. "auto" picks bf16 where the CPU multiplies it natively."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "auto":
        return "bf16" if cpu_multiplies_bf16() else "float32"
    return precision


def autocast(precision: str) -> ContextManager[object]:
    """The context a training step's forward and loss run in: CPU autocast to bfloat16 for "bf16", nothing for
    "float32" (backward follows the forward's dtypes; keep it outside, as torch's recipe does)."""
    if resolve_precision(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
