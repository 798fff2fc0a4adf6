"""The Python face of the multiway-encoder assembly (BEiT-3): a `torch.nn.Module` over the C++
encoder, called with transformers' input names. Torch habits (slot filters, state dicts, quantize,
pickling) come from the dual encoder's wrapper; only the build and the call differ."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from . import _C
from .dual_encoder import DualEncoderModel, DualEncoderOutput, softmax_contrastive_loss
from .model import _DTYPE_NAMES, CppModule, quantize_like
from .presets import resolve_config
from .towers import attach_towers, without_towers


@dataclass
class MultiwayEncoderOutput(DualEncoderOutput):
    """`.last_hidden_state` [batch, vision tokens + text tokens, hidden] (None after retrieval's
    separate passes), `.logits` [batch, classes] (vqa, image_classification), and the retrieval
    names `.image_embeds`, `.text_embeds`, `.logits_per_text`, `.logits_per_image`; `.loss` with labels
    or return_loss."""

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class MultiwayEncoderModel(DualEncoderModel):
    """BEiT-3: one multiway transformer over [image; text] and a task head, blocks in C++."""

    def __init__(self, config: str | Mapping[str, Any], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, initialize: bool = True, **overrides: Any):
        torch.nn.Module.__init__(self)
        resolved = resolve_config(config, **overrides)
        dtype_name = _DTYPE_NAMES.get(dtype or torch.float32)
        if dtype_name is None:
            raise ValueError(f"dtype: {dtype} is not one of {', '.join(map(str, _DTYPE_NAMES))}")
        cpp = _C.MultiwayEncoderModel(json.dumps(without_towers(resolved)), str(torch.device(device)), dtype_name,
                                      bool(initialize))
        object.__setattr__(self, "_module", cpp)
        object.__setattr__(self, "_config", json.loads(cpp.config_json()))
        for name, child in cpp.named_children().items():
            self._modules[name] = CppModule(child)
        attach_towers(self, resolved, initialize)

    @property
    def embed_dim(self) -> int:
        return self._config["llm"]["hidden"]

    @property
    def visual_tokens_per_image(self) -> int:
        return self._module.visual_tokens_per_image()

    def forward(self, input_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                return_loss: bool = False) -> MultiwayEncoderOutput:
        """input_ids [batch, tokens] (right-padded), pixel_values [batch, channels, height, width],
        attention_mask [batch, tokens] (1 = real token); either modality may be left out. labels: answer
        ids [batch] (cross-entropy) or answer scores [batch, classes] (VQA's binary cross-entropy, as
        BEiT-3's fine-tuning, times the classes); return_loss: retrieval's contrastive loss."""
        hidden, outputs = self._module.forward(input_ids, pixel_values, attention_mask)
        out = MultiwayEncoderOutput(last_hidden_state=hidden, **outputs)
        if labels is not None:
            if out.logits is None:
                raise ValueError(f"labels: the {self._config['head']['kind']} head gives no logits for these inputs")
            if labels.is_floating_point():
                out.loss = F.binary_cross_entropy_with_logits(out.logits.float(), labels.float()) * labels.size(1)
            else:
                out.loss = F.cross_entropy(out.logits.float(), labels)
        if return_loss:
            if out.logits_per_text is None:
                raise ValueError("return_loss: the contrastive loss needs a retrieval head and both input_ids and "
                                 "pixel_values")
            if out.logits_per_text.size(0) != out.logits_per_text.size(1):
                raise ValueError(f"return_loss: pairs text i with image i; got {out.logits_per_text.size(0)} texts "
                                 f"and {out.logits_per_text.size(1)} images")
            out.loss = softmax_contrastive_loss(out.logits_per_text)
        return out

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self(pixel_values=pixel_values).image_embeds

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self(input_ids=input_ids, attention_mask=attention_mask).text_embeds

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        _, args = super().__reduce__()
        return _rebuild_multiway, args


def _rebuild_multiway(config: dict[str, Any], state: Mapping[str, torch.Tensor], requires_grad: Mapping[str, bool],
                      training: bool, fused: bool) -> MultiwayEncoderModel:
    dtype = next(iter(state.values())).dtype if state else None
    model = MultiwayEncoderModel(config, dtype=dtype if dtype in _DTYPE_NAMES else None, initialize=False)
    quantize_like(model, state)
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    model.fused = fused
    return model.train(training)


def is_multiway_encoder(config: str | Mapping[str, Any], **overrides: Any) -> bool:
    """Whether the config's family builds the multiway-encoder assembly (family data, "assembly")."""
    from .presets import families, load_config

    family = overrides.get("family") or load_config(config).get("family", "llava")
    return families().get(family, {}).get("assembly", "decoder") == "multiway_encoder"
