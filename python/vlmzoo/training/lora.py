"""LoRA on the language model for `vlmzoo.train(..., lora=...)`: PEFT's adapters (Hu et al. 2021,
arXiv:2106.09685) on the LM's attention and MLP projections, the LM's own weights frozen.

A LoRA config is a peft.LoraConfig or a dict of its fields (r, lora_alpha, target_modules, lora_dropout, ...);
missing fields take LORA_DEFAULTS. target_modules names Linears of the LM's layers by their last name
("q_proj", "down_proj"; None: every Linear in the LM's layers) and is resolved to the full module names under
`llm.layers`, so the vision tower's projections of the same names stay untouched. A regex string is matched
against the full names and must stay inside the LM.

After training, `adapted.merge_and_unload()` gives a plain vlmzoo.Model with the adapters folded into its
weights (the fused C++ forward runs again); `adapted.save_pretrained(folder)` saves the adapters alone.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import torch

from vlmzoo.models.model import SLOTS, Model

try:  # optional: only lora= needs it
    import peft
except ImportError:  # pragma: no cover - exercised where peft is absent
    peft = None

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": None}
LM_LAYERS = "llm.layers."


def require_peft() -> None:
    if peft is None:
        raise ImportError("lora= trains PEFT's LoRA adapters, and peft is not installed: pip install peft")


def lm_projections(model: Model) -> list[str]:
    """Full names of the Linears in the LM's layers (attention and MLP projections), in module order."""
    return [name for name, module in model.named_modules()
            if name.startswith(LM_LAYERS) and isinstance(module, torch.nn.Linear) and not _is_lora_part(name)]


def _is_lora_part(name: str) -> bool:
    return ".lora_" in name or name.endswith(".base_layer")


def _resolve_targets(model: Model, targets: Any) -> list[str]:
    """target_modules -> full names of the LM's Linears it names; a clear error for names that match none."""
    available = lm_projections(model)
    if not available:
        raise ValueError(f"lora: {model.config['family']} model has no Linear in its LM layers ({LM_LAYERS}*) to adapt")
    if targets is None:
        return available
    if isinstance(targets, str):
        pattern = re.compile(targets)
        matched = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pattern.fullmatch(n)]
        outside = [n for n in matched if n not in available]
        if outside:
            raise ValueError(f"lora.target_modules {targets!r} matches Linears outside the LM's layers ({outside[0]}, ...): "
                             f"lora= adapts the language model; the other slots train fully or stay frozen")
        if not matched:
            raise ValueError(f"lora.target_modules {targets!r} matches no Linear in the LM's layers; they are named like "
                             f"{available[0]!r}")
        return matched
    names = list(targets)
    short = sorted({n.rsplit(".", 1)[-1] for n in available})
    unknown = [t for t in names if not any(n == t or n.endswith("." + t) for n in available)]
    if unknown or not names:
        raise ValueError(f"lora.target_modules {names!r}: {unknown or 'empty'} names no Linear of the LM's layers; "
                         f"this model's are {short}")
    return [n for n in available if any(n == t or n.endswith("." + t) for t in names)]


def lora_config(model: Model, lora: Any) -> Any:
    """A peft.LoraConfig for `model` from a LoraConfig or a dict (LORA_DEFAULTS filling the gaps), its
    target_modules resolved to full module names inside the LM. Raises a ValueError naming a bad field."""
    require_peft()
    if isinstance(lora, peft.LoraConfig):
        fields = {f.name: getattr(lora, f.name) for f in dataclasses.fields(lora) if f.init}
        config = lora
    elif isinstance(lora, Mapping):
        known = {f.name for f in dataclasses.fields(peft.LoraConfig) if f.init}
        unknown = sorted(set(lora) - known)
        if unknown:
            raise ValueError(f"lora: unknown field(s) {unknown}; expected fields of peft.LoraConfig such as "
                             f"{sorted(LORA_DEFAULTS)}")
        fields = {**LORA_DEFAULTS, **lora}
        config = None
    else:
        raise TypeError(f"lora= takes a peft.LoraConfig or a dict (r, lora_alpha, target_modules, lora_dropout), "
                        f"got {type(lora).__name__}")
    r, alpha, dropout = fields.get("r"), fields.get("lora_alpha"), fields.get("lora_dropout")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"lora.r must be an int >= 1 (the adapters' rank), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"lora.lora_alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"lora.lora_dropout must be in [0, 1), got {dropout!r}")
    targets = fields.get("target_modules")
    if isinstance(targets, (set, frozenset)):
        targets = sorted(targets)
    fields["target_modules"] = _resolve_targets(model, targets)
    if config is not None:
        return dataclasses.replace(config, target_modules=fields["target_modules"])
    return peft.LoraConfig(**fields)


def adapter_parameters(model: Model, config: Any) -> int:
    """Parameters of the adapters `config` puts on `model`: r * (in + out) per adapted Linear. Each costs
    2 FLOPs per token in the forward, as any weight does."""
    modules = dict(model.named_modules())
    return sum(config.r * (modules[n].in_features + modules[n].out_features) for n in config.target_modules)


def is_adapted(model: torch.nn.Module) -> bool:
    """Whether PEFT's LoRA layers sit in `model` already (an earlier stage of the same run put them there)."""
    return peft is not None and any(isinstance(m, peft.tuners.lora.LoraLayer) for m in model.modules())


def adapt(model: Model, config: Any) -> Any:
    """Wraps `model` (in place: its Linears become PEFT's LoRA layers) and returns the peft.PeftModel. Every
    base weight is frozen; the caller unfreezes the slots that train fully."""
    require_peft()
    model.requires_grad_(False)
    return peft.get_peft_model(model, config)


def set_trainable(model: Model, slots: tuple[str, ...]) -> None:
    """LoRA's split of `slots`: the LM trains through its adapters only (its weights frozen), every other
    slot in `slots` trains fully, the rest stays frozen."""
    for slot in SLOTS:
        model.requires_grad_(slot in slots and slot != "llm", slot)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.requires_grad_("llm" in slots)


def describe(config: Any, parameters: int) -> dict[str, Any]:
    """What a run's result records about its adapters (plain values: JSON and trainer state take them)."""
    return {"r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "target_modules": sorted(config.target_modules), "adapter_parameters": parameters}
