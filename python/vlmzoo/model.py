"""The Python face of a C++ model: a `torch.nn.Module` whose parameters are the C++ tensors themselves,
called with transformers' names.

The C++ tree (vision, abstractor, fusion, llm, head and their blocks) is mirrored by `CppModule`
views: each holds its block's C++ parameters (the same TensorImpls, re-classed as `nn.Parameter`),
so `state_dict`, `.to`, `named_modules`, optimizers, hooks on the model and DDP reach them, and
the C++ forward sees every change."""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _C
from .presets import resolve_config
from .towers import attach_towers, without_towers

SLOTS = ("vision", "abstractor", "fusion", "llm", "head")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass
class ModelOutput:
    """transformers' CausalLMOutput names: `.logits` [batch, tokens, vocab] over every position of
    input_ids, `.loss` when labels were given. Indexing and unpacking follow transformers: the fields
    that are not None, loss first."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


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


@torch.compiler.disable
def _cpp_forward(module: Any, *args: Any) -> torch.Tensor:
    # torch.compile(model) runs this call eagerly (dynamo cannot trace into C++) and compiles the rest.
    return module.forward(*args)


def _type_name(cpp_module: Any) -> str:
    # "vlmzoo::models::(anonymous namespace)::VitEncoder" -> "VitEncoder"; "...::LlamaLayerImpl" -> "LlamaLayer"
    first_line = str(cpp_module).splitlines()[0].replace("(anonymous namespace)", "")
    name = first_line.split("(", 1)[0].strip().split("::")[-1]
    return re.sub(r"Impl$", "", name) or "Module"


class CppModule(nn.Module):
    """A view of one C++ block: its parameters are the block's C++ tensors; its children are views too.
    Blocks run inside the C++ forward; calling one from Python is not supported."""

    def __init__(self, cpp_module: Any):
        super().__init__()
        self._cpp_type = _type_name(cpp_module)
        self.mirror(cpp_module)

    def mirror(self, cpp_module: Any) -> None:
        """(Re)reads the block's parameters from C++: at construction, and after quantize() repacked them."""
        self._parameters.clear()
        for name, tensor in cpp_module.named_parameters(recurse=False).items():
            if not isinstance(tensor, nn.Parameter):
                tensor.__class__ = nn.Parameter  # same TensorImpl, so gradients and optimizers reach C++
            self._parameters[name] = tensor
        for name, child in cpp_module.named_children().items():
            if name in self._modules:
                self._modules[name].mirror(child)
            else:
                self._modules[name] = CppModule(child)

    def _get_name(self) -> str:
        return self._cpp_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._cpp_type} runs inside the model's C++ forward; call the whole model instead")


class Model(nn.Module):
    """A vision-language model whose blocks and kernels live in C++ (`vlmzoo._C`).

    device="meta" builds the shapes only (for counting); initialize=False leaves the weights
    uninitialised, for a checkpoint about to be loaded."""

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any) -> Any:
        # The family's "assembly" picks the class: a dual encoder (CLIP, SigLIP) is its own module.
        if cls is Model and config is not None:
            from .dual_encoder import DualEncoderModel, is_dual_encoder

            if is_dual_encoder(config, **kwargs):
                return DualEncoderModel(config, *args, **kwargs)
            from .multiway_encoder import MultiwayEncoderModel, is_multiway_encoder

            if is_multiway_encoder(config, **kwargs):
                return MultiwayEncoderModel(config, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, config: str | Mapping[str, Any], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, initialize: bool = True, **overrides: Any):
        super().__init__()
        resolved = resolve_config(config, **overrides)
        dtype_name = _DTYPE_NAMES.get(dtype or torch.float32)
        if dtype_name is None:
            raise ValueError(f"dtype: {dtype} is not one of {', '.join(map(str, _DTYPE_NAMES))}")
        cpp = _C.VlmModel(json.dumps(without_towers(resolved)), str(torch.device(device)), dtype_name, bool(initialize))
        object.__setattr__(self, "_module", cpp)  # not a submodule: the views below own the parameters
        object.__setattr__(self, "_config", json.loads(cpp.config_json()))
        for name, child in cpp.named_children().items():
            self._modules[name] = CppModule(child)
        attach_towers(self, resolved, initialize)  # slots {"from": TOWER}: pretrained weights (vlmzoo.towers)

    # ---- identity
    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    @property
    def name(self) -> str:
        return self._config.get("name") or self._config["family"]

    @property
    def image_token_id(self) -> int:
        return self._config["fusion"].get("image_token_id", -1)

    @property
    def visual_tokens_per_image(self) -> int:
        return self._module.visual_tokens_per_image()

    @property
    def fused(self) -> bool:
        """Fused kernels (csrc/ops) when True, the plain ATen references when False: one switch for every block."""
        return self._module.is_fused()

    @fused.setter
    def fused(self, value: bool) -> None:
        self._module.set_fused(bool(value))

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"name={self.name!r}, family={self._config['family']!r}, parameters={n:,}"

    # ---- forward and generate
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids [batch, tokens] (image placeholders where the family's processor puts them),
        pixel_values [images, channels, height, width], attention_mask [batch, tokens];
        InstructBLIP also reads qformer_input_ids / qformer_attention_mask [images, tokens].
        Returns `.logits` [batch, tokens, vocab] and `.loss` when labels are given."""
        logits = _cpp_forward(self._module, input_ids, pixel_values, attention_mask, position_ids,
                              qformer_input_ids, qformer_attention_mask)
        loss = causal_lm_loss(logits, labels, fused=self.fused) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits)

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
        try:
            return self._module.generate(
                input_ids, pixel_values, attention_mask, qformer_input_ids, qformer_attention_mask,
                int(max_new_tokens), int(min_new_tokens), bool(do_sample), float(temperature), int(top_k or 0),
                float(top_p), float(repetition_penalty), eos_ids, int(pad), int(seed), int(no_repeat_ngram_size or 0),
                streamer.put if streamer is not None else None,
            )
        finally:
            if streamer is not None:
                streamer.end()

    def encode_images(self, pixel_values: torch.Tensor, qformer_input_ids: torch.Tensor | None = None,
                      qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Visual tokens [images, visual_tokens_per_image, llm hidden] as the language model receives them."""
        return self._module.encode_images(pixel_values, qformer_input_ids, qformer_attention_mask)

    # ---- torch-module habits, with a slot filter
    def named_parameters(self, slot: str | None = None, recurse: bool = True, remove_duplicate: bool = True,
                         prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
        if slot is not None and slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}; slots are {SLOTS}")
        for name, p in super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate):
            if slot is None or name.split(".", 1)[0] == slot:
                yield name, p

    def parameters(self, slot: str | None = None, recurse: bool = True) -> Iterator[torch.Tensor]:
        for _, p in self.named_parameters(slot, recurse=recurse):
            yield p

    def num_parameters(self, slot: str | None = None, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters(slot) if p.requires_grad or not trainable_only)

    def requires_grad_(self, requires_grad: bool = True, slot: str | None = None) -> "Model":
        if requires_grad:
            from .quantize import refuse_training

            refuse_training(self)
        for p in self.parameters(slot):
            p.requires_grad_(requires_grad)
        return self

    def freeze(self, *slots: str) -> "Model":
        for slot in slots:
            self.requires_grad_(False, slot)
        return self

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False) -> tuple[list[str], list[str]]:
        """Copies values into the C++ parameters; returns (missing, unexpected). Everything is checked
        before anything is copied, so a failed load leaves the model unchanged: strict raises KeyError
        naming missing or unexpected keys; a shape, dtype or non-finite value raises ValueError naming
        the tensor."""
        from .convert.validate import load_into

        return load_into(dict(self.named_parameters()), state_dict, strict=strict)

    def quantize(self, format: str) -> "Model":
        """Linear layers in "bf16" (bfloat16 weights, float32 arithmetic) or "int8" (int8 weights and
        per-token activations), in place and for inference only; see vlmzoo/quantize.py."""
        from .quantize import quantize

        return quantize(self, format)

    def train(self, mode: bool = True) -> "Model":
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

    def save_pretrained(self, folder: str, format: str = "vlmzoo", processor: Any = None) -> None:
        """format="vlmzoo": vlmzoo's checkpoint (resolved config JSON + safetensors), which
        `vlmzoo.from_pretrained` reads. format="transformers": a folder transformers' own class
        (LlavaForConditionalGeneration, Blip2ForConditionalGeneration, ...) loads with the same logits;
        a LLaVA's processor (or word tokenizer) is written with it when given."""
        save_in_format(self, folder, format, processor)

    # ---- copy and pickle: rebuilt from the config and the weights
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = OrderedDict((k, v.detach().clone()) for k, v in self.state_dict().items())
        requires_grad = {k: p.requires_grad for k, p in self.named_parameters()}
        return _rebuild, (self.config, state, requires_grad, self.training, self.fused)


SAVE_FORMATS = ("vlmzoo", "transformers")


def save_in_format(model: Any, folder: str, format: str, processor: Any = None) -> None:
    """save_pretrained's body, shared by every assembly."""
    if format == "vlmzoo":
        if processor is not None:
            raise ValueError("processor: only format=\"transformers\" writes a processor")
        from .convert.checkpoint import save_model

        save_model(model, folder)
    elif format == "transformers":
        from .convert.export_hf import save_for_transformers

        save_for_transformers(model, folder, processor=processor)
    else:
        raise ValueError(f"format: {format!r} is not one of {', '.join(map(repr, SAVE_FORMATS))}")


def _rebuild(config: dict[str, Any], state: Mapping[str, torch.Tensor], requires_grad: Mapping[str, bool],
             training: bool, fused: bool) -> Model:
    dtype = next(iter(state.values())).dtype if state else None
    model = Model(config, dtype=dtype if dtype in _DTYPE_NAMES else None, initialize=False)
    quantize_like(model, state)
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    model.fused = fused
    return model.train(training)


def quantize_like(model: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Quantises a freshly built model as the model `state` was taken from, so the state loads into it."""
    from .quantize import format_of_state_dict

    format = format_of_state_dict(state)
    if format != "float":
        model.quantize(format)


def build(config: str | Mapping[str, Any], **overrides: Any) -> Model:
    """A model from a preset name ("llava-1.5-tiny"), a JSON path or a dict; slot overrides merge:
    build("llava-1.5-tiny", abstractor={"kind": "linear"})."""
    return Model(config, **overrides)
