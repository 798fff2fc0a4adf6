"""The Python face of the dual-encoder assembly (CLIP, SigLIP): a `torch.nn.Module` over the C++
towers, called as transformers' CLIPModel / SiglipModel and returning their output names.

Which class a config builds is family data (configs/families/<family>.json, "assembly"):
`vlmzoo.Model(...)` and `vlmzoo.build(...)` return a DualEncoderModel for a "dual_encoder" family."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import _C
from .model import _DTYPE_NAMES, CppModule, _cpp_forward, quantize_like, save_in_format
from .presets import resolve_config
from .towers import attach_towers, without_towers

DUAL_SLOTS = ("vision", "llm", "head")


@dataclass
class DualEncoderOutput:
    """transformers' CLIPOutput / SiglipOutput names: `.logits_per_image` [images, texts],
    `.logits_per_text` [texts, images], unit-norm `.image_embeds` [images, E] and `.text_embeds`
    [texts, E]; `.loss` when return_loss. Indexing and unpacking skip fields that are None."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


def softmax_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: cross-entropy over images for each text and over texts for each
    image, pair i <-> i the positive; logits_per_text [B, B]."""
    targets = torch.arange(logits_per_text.size(0), device=logits_per_text.device)
    logits = logits_per_text.float()
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def sigmoid_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every (text, image) pair is a binary decision, +1 on the
    diagonal and -1 elsewhere; summed over images, averaged over texts. logits_per_text [B, B]."""
    logits = logits_per_text.float()
    signs = 2 * torch.eye(logits.size(0), device=logits.device) - 1
    return -F.logsigmoid(signs * logits).sum(-1).mean()


LOSSES = {"softmax": softmax_contrastive_loss, "sigmoid": sigmoid_contrastive_loss}


class DualEncoderModel(nn.Module):
    """An image tower and a text tower scored against each other (CLIP, SigLIP), blocks in C++.

    device="meta" builds the shapes only (for counting); initialize=False leaves the weights
    uninitialised, for a checkpoint about to be loaded."""

    def __init__(self, config: str | Mapping[str, Any], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, initialize: bool = True, **overrides: Any):
        super().__init__()
        resolved = resolve_config(config, **overrides)
        dtype_name = _DTYPE_NAMES.get(dtype or torch.float32)
        if dtype_name is None:
            raise ValueError(f"dtype: {dtype} is not one of {', '.join(map(str, _DTYPE_NAMES))}")
        cpp = _C.DualEncoderModel(json.dumps(without_towers(resolved)), str(torch.device(device)), dtype_name,
                                  bool(initialize))
        object.__setattr__(self, "_module", cpp)  # not a submodule: the views below own the parameters
        object.__setattr__(self, "_config", json.loads(cpp.config_json()))
        for name, child in cpp.named_children().items():
            self._modules[name] = CppModule(child)
        attach_towers(self, resolved, initialize)  # slots {"from": TOWER}: pretrained weights (vlmzoo.towers)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    @property
    def name(self) -> str:
        return self._config.get("name") or self._config["family"]

    @property
    def embed_dim(self) -> int:
        return self._module.embed_dim()

    @property
    def visual_tokens_per_image(self) -> int:
        return 1  # one pooled vector per image

    @property
    def fused(self) -> bool:
        return self._module.is_fused()

    @fused.setter
    def fused(self, value: bool) -> None:
        self._module.set_fused(bool(value))

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"name={self.name!r}, family={self._config['family']!r}, parameters={n:,}"

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, return_loss: bool = False) -> DualEncoderOutput:
        """input_ids [texts, tokens], pixel_values [images, channels, height, width], attention_mask
        [texts, tokens]. return_loss: the family's loss (head.loss) with text i paired to image i."""
        logits_per_image, logits_per_text, image_embeds, text_embeds = _cpp_forward(
            self._module, input_ids, pixel_values, attention_mask)
        loss = None
        if return_loss:
            if logits_per_text.size(0) != logits_per_text.size(1):
                raise ValueError(f"return_loss: pairs text i with image i, so texts and images must be as many; got "
                                 f"{logits_per_text.size(0)} texts and {logits_per_text.size(1)} images")
            loss = LOSSES[self._config["head"]["loss"]](logits_per_text)
        return DualEncoderOutput(loss=loss, logits_per_image=logits_per_image, logits_per_text=logits_per_text,
                                 text_embeds=text_embeds, image_embeds=image_embeds)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [images, embed_dim]."""
        return self._module.encode_images(pixel_values)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm text embeddings [texts, embed_dim]."""
        return self._module.encode_texts(input_ids, attention_mask)

    # ---- torch-module habits, with a slot filter
    def named_parameters(self, slot: str | None = None, recurse: bool = True, remove_duplicate: bool = True,
                         prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
        if slot is not None and slot not in DUAL_SLOTS:
            raise ValueError(f"unknown slot {slot!r}; a dual encoder's slots are {DUAL_SLOTS}")
        for name, p in super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate):
            if slot is None or name.split(".", 1)[0] == slot:
                yield name, p

    def parameters(self, slot: str | None = None, recurse: bool = True) -> Iterator[torch.Tensor]:
        for _, p in self.named_parameters(slot, recurse=recurse):
            yield p

    def num_parameters(self, slot: str | None = None, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters(slot) if p.requires_grad or not trainable_only)

    def requires_grad_(self, requires_grad: bool = True, slot: str | None = None) -> "DualEncoderModel":
        if requires_grad:
            from .quantize import refuse_training

            refuse_training(self)
        for p in self.parameters(slot):
            p.requires_grad_(requires_grad)
        return self

    def freeze(self, *slots: str) -> "DualEncoderModel":
        for slot in slots:
            self.requires_grad_(False, slot)
        return self

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False) -> tuple[list[str], list[str]]:
        """As Model.load_state_dict: everything is checked before anything is copied."""
        from .convert.validate import load_into

        return load_into(dict(self.named_parameters()), state_dict, strict=strict)

    def quantize(self, format: str) -> "DualEncoderModel":
        """As Model.quantize: linear layers in "bf16" or "int8", in place, for inference only."""
        from .quantize import quantize

        return quantize(self, format)

    def train(self, mode: bool = True) -> "DualEncoderModel":
        if mode:
            from .quantize import refuse_training

            refuse_training(self)
        self._module.train(mode)
        return super().train(mode)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, folder: str, format: str = "vlmzoo") -> None:
        """format="vlmzoo": vlmzoo's checkpoint (resolved config JSON + safetensors), which
        `vlmzoo.from_pretrained` reads. format="transformers": a folder transformers' CLIPModel /
        SiglipModel loads with the same logits."""
        save_in_format(self, folder, format)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = OrderedDict((k, v.detach().clone()) for k, v in self.state_dict().items())
        requires_grad = {k: p.requires_grad for k, p in self.named_parameters()}
        return _rebuild, (self.config, state, requires_grad, self.training, self.fused)


def _rebuild(config: dict[str, Any], state: Mapping[str, torch.Tensor], requires_grad: Mapping[str, bool],
             training: bool, fused: bool) -> DualEncoderModel:
    dtype = next(iter(state.values())).dtype if state else None
    model = DualEncoderModel(config, dtype=dtype if dtype in _DTYPE_NAMES else None, initialize=False)
    quantize_like(model, state)
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    model.fused = fused
    return model.train(training)


def is_dual_encoder(config: str | Mapping[str, Any], **overrides: Any) -> bool:
    """Whether the config's family builds the dual-encoder assembly ("assembly" in the family's data).
    An unknown family is left to the model's own config check, which names it."""
    from .presets import families, load_config

    family = overrides.get("family") or load_config(config).get("family", "llava")
    return families().get(family, {}).get("assembly", "decoder") == "dual_encoder"
