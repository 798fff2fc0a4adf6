"""The decoder VLM's torch module (LLaVA, BLIP-2, InstructBLIP): called with transformers' names,
returning `.logits` and `.loss`; generation. The torch plumbing every assembly shares (parameter views
of the C++ tensors, slot filter, freezing, state_dict checks, pickling, quantisation, saving) is the
base's, vlmzoo.models.assembly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from vlmzoo.extension import _C
from vlmzoo.config.towers import SLOTS
from vlmzoo.models.assembly import AssemblyModule, OutputFields, cpp_forward, cpp_forward_outputs
from vlmzoo.models.decoder_blocks import DecoderBlocks
from vlmzoo.models.image_patches import concatenated_patches
from vlmzoo.models.transformers_api import TransformersApi


def check_image_axes(pixel_values: torch.Tensor | None, image_attention_mask: torch.Tensor | None
                   ) -> torch.Tensor | None:
    """IDEFICS's pixel_values [batch, images, C, H, W] (or OpenFlamingo's [batch, images, frames, C, H, W]):
    the image axis must match image_attention_mask's last. The core flattens them (and tells the abstractor
    where each image sits); 4-d pixel_values pass as they are."""
    if pixel_values is None or pixel_values.dim() not in (5, 6):
        return pixel_values
    if image_attention_mask is not None and pixel_values.size(1) != image_attention_mask.size(-1):
        raise ValueError(f"pixel_values: {pixel_values.size(1)} images per row (shape {tuple(pixel_values.shape)}) but "
                         f"image_attention_mask has {image_attention_mask.size(-1)} image columns "
                         f"(shape {tuple(image_attention_mask.shape)})")
    return pixel_values


@dataclass
class ModelOutput(OutputFields):
    """transformers' CausalLMOutput names: `.logits` [batch, tokens, vocab] over every position of
    input_ids, `.loss` when labels were given. Indexing and unpacking follow transformers: the fields
    that are not None, loss first.

    With output_hidden_states: `.hidden_states` (the LM's, layers + 1 of [batch, tokens', hidden]: what
    layer 0 reads, each layer's output, the last after the final norm, as transformers returns them),
    `.image_hidden_states` [images, visual tokens, hidden] (the visual tokens the LM receives: LLaVA's
    projected features) and `.vision_hidden_states` (the vision tower's: embeddings, then each layer's
    output, as CLIPVisionModel / Blip2VisionModel return them; None for towers without layers).
    With output_attentions: `.attentions`, the LM's attention probabilities per layer [batch, heads, T', T']."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Next-token cross-entropy; labels sit at the positions of the tokens they name, -100 ignored.

    logits [batch, tokens, vocab], labels [batch, tokens]. fused: vlmzoo::cross_entropy, which reads
    the logits where they lie (the labels are shifted instead: no copy of the logits) and writes their
    gradient in one pass; otherwise torch's cross_entropy on the shifted logits (the reference)."""
    if not fused:
        shifted_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
        return F.cross_entropy(shifted_logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    shifted_labels = F.pad(labels[:, 1:], (0, 1), value=-100)  # the last position names no next token
    rows, _ = torch.ops.vlmzoo.cross_entropy(logits, shifted_labels, -100)
    return rows.sum() / (shifted_labels != -100).sum()  # the mean over named tokens (nan if none, as torch)


class Model(TransformersApi, AssemblyModule):
    """A vision-language model whose blocks and kernels live in C++ (`vlmzoo._C`).

    device="meta" builds the shapes only (for counting); initialize=False leaves the weights
    uninitialised, for a checkpoint about to be loaded."""

    SLOTS = SLOTS
    ASSEMBLY = "decoder"
    BLOCKS = DecoderBlocks
    cpp_class = staticmethod(_C.VlmModel)

    # ---- identity
    @property
    def image_token_id(self) -> int:
        return self._config["fusion"].get("image_token_id", -1)

    @property
    def visual_tokens_per_image(self) -> int:
        return self._module.visual_tokens_per_image()

    # ---- forward and generate
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        image_patches: Any = None,
        image_patches_indices: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[torch.Tensor, ...]:
        """input_ids [batch, tokens] (image placeholders where the family's processor puts them),
        pixel_values [images, channels, height, width], attention_mask [batch, tokens];
        InstructBLIP also reads qformer_input_ids / qformer_attention_mask [images, tokens];
        Fuyu reads image_patches [total patches, patch width] (or per sample with image_patches_indices,
        see vlmzoo/models/image_patches.py) in place of pixel_values;
        Flamingo / IDEFICS take pixel_values [batch, images, C, H, W] and image_attention_mask
        [batch, tokens, images] (which images each token reads; without it, the latest image token's).
        Returns `.logits` [batch, tokens, vocab] and `.loss` when labels are given.
        transformers' options: inputs_embeds [batch, tokens, llm hidden] in place of input_ids (image
        placeholders are the rows equal to the image token's embedding); output_hidden_states,
        output_attentions (see ModelOutput); return_dict=False gives ModelOutput.to_tuple()."""
        pixel_values = self._patches_as_pixel_values(input_ids, pixel_values, image_patches, image_patches_indices)
        pixel_values = check_image_axes(pixel_values, image_attention_mask)
        self._blocks.sync()  # hooks and replacements made since the last call take effect
        # ---- transformers' full call (issue 24): the plain call keeps its one C++ entry point
        extras: dict[str, Any] = {}
        if input_ids is not None and inputs_embeds is None and not output_hidden_states and not output_attentions:
            logits = cpp_forward(self._module, input_ids, pixel_values, attention_mask, position_ids,
                                 qformer_input_ids, qformer_attention_mask, image_attention_mask)
        else:
            logits, hidden, attentions, vision_hidden, visual = cpp_forward_outputs(
                self._module, input_ids, pixel_values, attention_mask, position_ids, qformer_input_ids,
                qformer_attention_mask, image_attention_mask, inputs_embeds, bool(output_hidden_states),
                bool(output_attentions))
            if output_hidden_states:
                extras.update(hidden_states=tuple(hidden), image_hidden_states=visual,
                              vision_hidden_states=tuple(vision_hidden) or None)
            if output_attentions:
                extras["attentions"] = tuple(attentions)
        loss = causal_lm_loss(logits, labels, fused=self.fused) if labels is not None else None
        output = ModelOutput(loss=loss, logits=logits, **extras)
        return output if return_dict is None or return_dict else output.to_tuple()

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
        *,
        min_new_tokens: int = 0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        num_beams: int = 1,
        streamer: Any = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        image_patches: Any = None,
        image_patches_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Prompt followed by new tokens, [batch, prompt + new]; batches must be left-padded.
        eos_token_id: None uses the config's llm.eos_token_id; [] never stops early.
        no_repeat_ngram_size: as transformers', no n-gram of that size (prompt included) occurs twice.
        streamer: transformers' BaseStreamer protocol (TextStreamer, TextIteratorStreamer, or any object
        with put/end): put(prompt ids [batch, prompt]) first, put(new ids [batch]) after every step,
        end() when generation stops (also when it stops on an error, so a reading thread never waits
        forever; the error still propagates)."""
        if num_beams != 1:
            raise ValueError(f"num_beams: beam search is not implemented yet (got {num_beams}); use num_beams=1")
        if streamer is not None and not (callable(getattr(streamer, "put", None))
                                         and callable(getattr(streamer, "end", None))):
            raise TypeError(f"streamer: needs put(token_ids) and end() methods (transformers' BaseStreamer); "
                            f"got {type(streamer).__name__}")
        if eos_token_id is None:
            eos_ids = [self._config["llm"]["eos_token_id"]]
        elif isinstance(eos_token_id, int):
            eos_ids = [eos_token_id]
        else:
            eos_ids = list(eos_token_id)
        pad = self._config["llm"]["pad_token_id"] if pad_token_id is None else pad_token_id
        pixel_values = self._patches_as_pixel_values(input_ids, pixel_values, image_patches, image_patches_indices)
        pixel_values = check_image_axes(pixel_values, image_attention_mask)
        self._blocks.sync()
        try:
            return self._module.generate(
                input_ids, pixel_values, attention_mask, qformer_input_ids, qformer_attention_mask,
                int(max_new_tokens), int(min_new_tokens), bool(do_sample), float(temperature), int(top_k or 0),
                float(top_p), float(repetition_penalty), eos_ids, int(pad), int(seed), int(no_repeat_ngram_size or 0),
                streamer.put if streamer is not None else None, image_attention_mask,
            )
        finally:
            if streamer is not None:
                streamer.end()

    def _patches_as_pixel_values(self, input_ids: torch.Tensor, pixel_values: Any, image_patches: Any,
                                 image_patches_indices: Any) -> Any:
        """Fuyu's image_patches (either form transformers has used) as the patches the core splices."""
        if image_patches is None and image_patches_indices is None:
            return pixel_values  # images, or (transformers >= 5.23) Fuyu's concatenated patches under this name
        if pixel_values is not None:
            raise ValueError("pixel_values and image_patches: pass one of them (both hold the images)")
        if image_patches is None:
            raise ValueError("image_patches_indices: given without image_patches")
        if input_ids is None:
            raise ValueError("image_patches: placed by the image tokens of input_ids; with inputs_embeds pass the "
                             "concatenated patches as pixel_values")
        vision = self._config.get("vision") or {}
        width = vision["patch_size"] ** 2 * vision["channels"] if vision.get("kind") == "patch_linear" else None
        return concatenated_patches(input_ids, image_patches, image_patches_indices, self.image_token_id, width)

    def encode_images(self, pixel_values: torch.Tensor, qformer_input_ids: torch.Tensor | None = None,
                      qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Visual tokens [images, visual_tokens_per_image, llm hidden] as the language model receives them."""
        return self._module.encode_images(pixel_values, qformer_input_ids, qformer_attention_mask)


def build(config: str | Mapping[str, Any], **overrides: Any) -> Model:
    """A model from a preset name ("llava-1.5-tiny"), a JSON path or a dict; slot overrides merge:
    build("llava-1.5-tiny", abstractor={"kind": "linear"})."""
    return Model(config, **overrides)
