"""The decoder assembly's callable blocks and override points (LLaVA, BLIP-2, InstructBLIP, Fuyu,
Flamingo, IDEFICS): `model.vision(pixel_values)`, `model.abstractor(features)`,
`model.llm.layers[i](hidden_states, attention_mask, position_ids)`, each one C++ block with autograd
(vlmzoo._C.run_*, csrc/models/decoder_blocks.cpp); and where a hooked or replaced one runs inside the C++
forward and generate (vision, abstractor, each LM layer, every Linear; see blocks.py). The blocks inside
(norms, each layer's `attn` and `mlp`, the final `llm.norm`, Flamingo's `fusion.blocks.N`, the `head`) are
BlockViews: callable, and hooked or replaced they run inside forward and generate too
(csrc/nn/overridable.h). A layer also answers to transformers' names (`self_attn`, `input_layernorm`,
`post_attention_layernorm`)."""
from __future__ import annotations

import weakref
from typing import Any

import torch

from vlmzoo.extension import _C
from vlmzoo.models.blocks import BlockView, Blocks, CppModule

_LAYER = r"llm\.layers\.(\d+)"
# transformers' names for a decoder layer's blocks -> ours (model.llm.layers[0].self_attn is .attn)
LAYER_ALIASES = {"self_attn": "attn", "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}


class VisionView(CppModule):
    """The vision encoder: pixel_values [images, C, H, W] -> features [images, tokens, vision width]."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _C.run_vision(self._blocks.cpp, pixel_values)


class AbstractorView(CppModule):
    """The abstractor: features [images, tokens, vision width] (and, for InstructBLIP's Q-Former, the
    instruction [images, length]) -> visual tokens [images, visual tokens, width]."""

    def forward(self, features: torch.Tensor, qformer_input_ids: torch.Tensor | None = None,
                qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return _C.run_abstractor(self._blocks.cpp, features, qformer_input_ids, qformer_attention_mask)


class DecoderLayerView(CppModule):
    """One LM layer: hidden_states [batch, tokens, hidden] -> [batch, tokens, hidden]. Called alone it
    attends causally over attention_mask [batch, tokens] (1 = real token; None: all) at position_ids
    [batch, tokens] (None: the LM's defaults). Inside the model's forward or generate (a hook or a
    replacement called it) it reads the forward's own mask, positions and caches."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        blocks = self._blocks
        if blocks.active:
            context = blocks.active[-1]
        else:
            context = _C.layer_context(blocks.cpp, hidden_states, attention_mask, position_ids)
        return _C.run_layer(blocks.cpp, int(self._path.rsplit(".", 1)[1]), hidden_states, context)

    def __getattr__(self, name: str) -> Any:
        if name in LAYER_ALIASES and LAYER_ALIASES[name] in self.__dict__["_modules"]:
            return self._modules[LAYER_ALIASES[name]]
        return super().__getattr__(name)


class LayerAttentionView(BlockView):
    """A decoder layer's self-attention: normed hidden_states [batch, tokens, hidden] -> [batch, tokens, hidden]
    (before the residual). Called alone it attends causally over attention_mask [batch, tokens] at
    position_ids (the LM's rotary tables or none); inside forward or generate, with the forward's own mask,
    positions and KV cache."""

    def run_alone(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None) -> torch.Tensor:
        cpp = self._blocks.cpp
        context = _C.layer_context(cpp, hidden_states, attention_mask, position_ids)
        return _C.run_layer_attention(cpp, int(self._path.split(".")[2]), hidden_states, context)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self._calls:
            return self._calls[-1]([hidden_states])
        return self.run_alone(hidden_states, attention_mask, position_ids)


class GatedCrossAttentionView(BlockView):
    """Flamingo's gated cross-attention block before an LM layer: hidden_states [batch, tokens, hidden],
    visual [batch * images, visual tokens, width] (the abstractor's output), media_mask bool
    [batch, tokens, images] (which images each token reads; None: all of its row) -> hidden_states.
    Inside forward or generate its hooks see the forward's visual tokens and media mask; a pre-hook that
    changes them runs the block over the new ones (without the generate cache)."""

    def forward(self, hidden_states: torch.Tensor, visual: torch.Tensor,
                media_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(hidden_states, visual, media_mask)


class HeadView(BlockView):
    """The LM head: the final hidden states [batch, tokens, hidden] (after the final norm) -> logits
    [batch, tokens, vocab], through the LM's lm_head or its tied embeddings."""

    def run_alone(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _C.run_head(self._blocks.cpp, hidden_states)


class DecoderBlocks(Blocks):
    VIEWS = {"vision": VisionView, "abstractor": AbstractorView, _LAYER: DecoderLayerView,
             _LAYER + r"\.attn": LayerAttentionView, r"fusion\.blocks\.\d+": GatedCrossAttentionView, "head": HeadView}
    POINTS = {"vision": "vision", "abstractor": "abstractor", _LAYER: "llm.layers.N"}

    def install_point(self, path: str, on: bool) -> None:
        if path in ("vision", "abstractor"):
            _C.set_block_override(self.cpp, path, 0, self._calling_optional(path) if on else None)
        else:
            index = int(path.rsplit(".", 1)[1])
            _C.set_block_override(self.cpp, "layer", index, self._calling_layer(path) if on else None)

    def _calling_optional(self, path: str) -> Any:
        # The abstractor's text arguments are passed only when given: a replacement may take features only.
        blocks = weakref.ref(self)  # weak: C++ keeps the callback, and this object keeps the views

        def call(first: torch.Tensor, *optional: Any) -> torch.Tensor:
            module = blocks().module_at(path)
            return module(first, *optional) if any(a is not None for a in optional) else module(first)
        return call

    def _calling_layer(self, path: str) -> Any:
        blocks = weakref.ref(self)

        def call(index: int, hidden: torch.Tensor, context: Any) -> torch.Tensor:
            active = blocks().active
            active.append(context)
            try:
                return blocks().module_at(path)(hidden, attention_mask=context.attention_mask,
                                                position_ids=context.positions)
            finally:
                active.pop()
        return call

    def after_install(self) -> None:
        _C.set_python_in_vision(self.cpp, any(p == "vision" or p.startswith("vision.") for p in self.installed))
