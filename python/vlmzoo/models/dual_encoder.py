"""The Python face of the dual-encoder assembly (CLIP, SigLIP): a `torch.nn.Module` over the C++
towers, called as transformers' CLIPModel / SiglipModel and returning their output names.

Which class a config builds is family data (configs/families/<family>.json, "assembly"):
`vlmzoo.Model(...)` and `vlmzoo.build(...)` return a DualEncoderModel for a "dual_encoder" family."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlmzoo.extension import _C
from vlmzoo.models.assembly import AssemblyModule, OutputFields, cpp_forward

DUAL_SLOTS = ("vision", "llm", "head")


@dataclass
class DualEncoderOutput(OutputFields):
    """transformers' CLIPOutput / SiglipOutput names: `.logits_per_image` [images, texts],
    `.logits_per_text` [texts, images], unit-norm `.image_embeds` [images, E] and `.text_embeds`
    [texts, E]; `.loss` when return_loss. Indexing and unpacking skip fields that are None."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


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


class DualEncoderModel(AssemblyModule):
    """An image tower and a text tower scored against each other (CLIP, SigLIP), blocks in C++.

    device="meta" builds the shapes only (for counting); initialize=False leaves the weights
    uninitialised, for a checkpoint about to be loaded."""

    SLOTS = DUAL_SLOTS
    ASSEMBLY = "dual_encoder"
    cpp_class = staticmethod(_C.DualEncoderModel)

    @property
    def embed_dim(self) -> int:
        return self._module.embed_dim()

    @property
    def visual_tokens_per_image(self) -> int:
        return 1  # one pooled vector per image

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, return_loss: bool = False) -> DualEncoderOutput:
        """input_ids [texts, tokens], pixel_values [images, channels, height, width], attention_mask
        [texts, tokens]. return_loss: the family's loss (head.loss) with text i paired to image i."""
        self._blocks.sync()  # hooked or replaced Linear views run inside the C++ forward
        logits_per_image, logits_per_text, image_embeds, text_embeds = cpp_forward(
            self._module, input_ids, pixel_values, attention_mask)
        loss = None
        if return_loss:
            if logits_per_text.size(0) != logits_per_text.size(1):
                raise ValueError(f"return_loss: pairs text i with image i, so texts and images must be as many; got "
                                 f"{logits_per_text.size(0)} texts and {logits_per_text.size(1)} images")
            loss = LOSSES[self._config["head"]["loss"]](logits_per_text)
        return DualEncoderOutput(loss=loss, logits_per_image=logits_per_image, logits_per_text=logits_per_text,
                                 text_embeds=text_embeds, image_embeds=image_embeds)

    def get_image_features(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings [images, embed_dim]: the projections before L2 normalisation, as transformers'
        CLIPModel/SiglipModel.get_image_features give them (their `.pooler_output` in transformers 5);
        normalize=True gives the unit-norm `.image_embeds` the logits compare."""
        self._blocks.sync()
        return self._module.encode_images(pixel_values, normalize)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          normalize: bool = False) -> torch.Tensor:
        """Text embeddings [texts, embed_dim], unnormalised as transformers gives them (normalize=True: unit norm)."""
        self._blocks.sync()
        return self._module.encode_texts(input_ids, attention_mask, normalize)

    def _unknown_slot(self, slot: str) -> str:
        return f"unknown slot {slot!r}; a dual encoder's slots are {self.SLOTS}"
