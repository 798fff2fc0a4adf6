"""The Python face of the multiway-encoder assembly (BEiT-3): a `torch.nn.Module` over the C++ encoder,
called with transformers' input names. Torch habits (slot filters, state dicts, quantize, pickling)
come from the base every assembly shares (vlmzoo.models.assembly); only the call differs.

Which class a config builds is family data (configs/families/beit3.json, "assembly": "multiway_encoder")."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlmzoo.extension import _C
from vlmzoo.models.assembly import AssemblyModule, cpp_forward
from vlmzoo.models.blocks import Blocks
from vlmzoo.models.dual_encoder import DualEncoderOutput, softmax_contrastive_loss


@dataclass
class MultiwayEncoderOutput(DualEncoderOutput):
    """`.last_hidden_state` [batch, vision tokens + text tokens, hidden] (None after retrieval's
    separate passes), `.logits` [batch, classes] (vqa, image_classification), and the retrieval
    names `.image_embeds`, `.text_embeds`, `.logits_per_text`, `.logits_per_image`; `.loss` with labels
    or return_loss."""

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class MultiwayBlocks(Blocks):
    # The multiway layers route their A/B Linears through vlmzoo::multiway_linear, not Linear::forward: no
    # block can call back into Python yet, so every hook or replacement raises rather than being ignored.
    LINEARS = False
    BLOCK_VIEWS = False


class MultiwayEncoderModel(AssemblyModule):
    """BEiT-3: one multiway transformer over [image; text] and a task head, blocks in C++."""

    SLOTS = ("vision", "llm", "head")
    ASSEMBLY = "multiway_encoder"
    BLOCKS = MultiwayBlocks
    cpp_class = staticmethod(_C.MultiwayEncoderModel)

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
        self._blocks.sync()
        hidden, outputs = cpp_forward(self._module, input_ids, pixel_values, attention_mask)
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

    def _unknown_slot(self, slot: str) -> str:
        return f"unknown slot {slot!r}; a multiway encoder's slots are {self.SLOTS}"
