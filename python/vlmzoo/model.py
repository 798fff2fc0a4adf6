"""The Python face of a C++ model: transformers' call conventions, torch-module habits."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from . import _C
from .presets import resolve_config

SLOTS = ("vision", "abstractor", "llm")


@dataclass
class ModelOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy; labels sit at the positions of the tokens they name, -100 ignored."""
    shifted_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(shifted_logits, labels[:, 1:].reshape(-1), ignore_index=-100)


class Model:
    """A vision-language model whose modules and kernels live in C++ (`vlmzoo._C`).

    Parameters are the C++ tensors themselves, so a torch optimizer trains them in place."""

    def __init__(self, config: str | Mapping[str, Any], **overrides: Any):
        resolved = resolve_config(config, **overrides)
        self._module = _C.VlmModel(json.dumps(resolved))
        self._config = json.loads(self._module.config_json())

    # ---- identity
    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    @property
    def name(self) -> str:
        return self._config.get("name") or self._config["family"]

    @property
    def image_token_id(self) -> int:
        return self._config["fusion"]["image_token_id"]

    @property
    def visual_tokens_per_image(self) -> int:
        from .info import visual_tokens_per_image

        return visual_tokens_per_image(self._config)

    @property
    def fused(self) -> bool:
        return self._module.fused

    @fused.setter
    def fused(self, value: bool) -> None:
        self._module.fused = bool(value)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"vlmzoo.Model(name={self.name!r}, family={self._config['family']!r}, parameters={n:,})"

    # ---- forward and generate
    def __call__(self, *args: Any, **kwargs: Any) -> ModelOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        logits = self._module.forward(input_ids, pixel_values, attention_mask, position_ids)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss)

    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Prompt followed by new tokens, [batch, prompt + new]; batches must be left-padded.
        eos_token_id: None uses the config's llm.eos_token_id; [] never stops early."""
        if eos_token_id is None:
            eos_ids = [self._config["llm"]["eos_token_id"]]
        elif isinstance(eos_token_id, int):
            eos_ids = [eos_token_id]
        else:
            eos_ids = list(eos_token_id)
        pad = self._config["llm"]["pad_token_id"] if pad_token_id is None else pad_token_id
        return self._module.generate(
            input_ids, pixel_values, attention_mask, int(max_new_tokens), bool(do_sample), float(temperature),
            int(top_k or 0), float(top_p), eos_ids, int(pad), int(seed),
        )

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens [num_images, tokens, llm.hidden] as the language model receives them."""
        return self._module.encode_images(pixel_values)

    # ---- torch-module habits
    def named_parameters(self, slot: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        if slot is not None and slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}; slots are {SLOTS}")
        for name, p in self._module.named_parameters().items():
            if slot is None or name.split(".", 1)[0] == slot:
                yield name, p

    def parameters(self, slot: str | None = None) -> Iterator[torch.Tensor]:
        for _, p in self.named_parameters(slot):
            yield p

    def num_parameters(self, slot: str | None = None, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters(slot) if p.requires_grad or not trainable_only)

    def requires_grad_(self, requires_grad: bool = True, slot: str | None = None) -> "Model":
        for p in self.parameters(slot):
            p.requires_grad_(requires_grad)
        return self

    def freeze(self, *slots: str) -> "Model":
        for slot in slots:
            self.requires_grad_(False, slot)
        return self

    def state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict((name, p.detach()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> tuple[list[str], list[str]]:
        """Copies values into the C++ parameters; returns (missing, unexpected). strict raises on either
        and on any shape mismatch, naming the keys."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        mismatched = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state_dict))
            if tuple(state_dict[k].shape) != tuple(own[k].shape)
        ]
        if mismatched:
            raise ValueError("shape mismatch: " + "; ".join(mismatched))
        if strict and (missing or unexpected):
            raise KeyError(_describe_key_problems(missing, unexpected))
        with torch.no_grad():
            for k in set(own) & set(state_dict):
                own[k].copy_(state_dict[k])
        return missing, unexpected

    def train(self, mode: bool = True) -> "Model":
        self._module.train(mode)
        return self

    def eval(self) -> "Model":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self._module.is_training() if hasattr(self._module, "is_training") else self._module.training

    def to(self, *args: Any, **kwargs: Any) -> "Model":
        """`model.to(torch.bfloat16)`, `model.to("cuda")`, `model.to("cuda", torch.float16)`."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = torch.device(a)
        if device is not None and dtype is not None:
            self._module.to(device, dtype)
        elif device is not None:
            self._module.to(device)
        elif dtype is not None:
            self._module.to(dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, folder: str) -> None:
        """vlmzoo's checkpoint (resolved config JSON + safetensors); `vlmzoo.from_pretrained` reads it."""
        from .convert.checkpoint import save_model

        save_model(self, folder)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None


def _describe_key_problems(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    return "; ".join(parts)


def build(config: str | Mapping[str, Any], **overrides: Any) -> Model:
    """A model from a preset name ("llava-1.5-tiny"), a JSON path or a dict; slot overrides merge:
    build("llava-1.5-tiny", abstractor={"kind": "linear"})."""
    return Model(config, **overrides)
