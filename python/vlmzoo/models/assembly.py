"""One base for every assembly's torch module (the decoder VLM, the dual encoder, and the next ones):
a `torch.nn.Module` over a C++ assembly whose parameters are the C++ tensors themselves.

The C++ tree (vision, abstractor, fusion, llm, head and their blocks) is mirrored by `CppModule`
views (vlmzoo.models.blocks; callable where the assembly can run the block alone, and when hooked or
replaced the C++ forward calls back into them): each holds its block's C++ parameters (the same
TensorImpls, re-classed as `nn.Parameter`), so `state_dict`, `.to`, `named_modules`, optimizers, hooks on the model and DDP reach them, and
the C++ forward sees every change. Written once here: the parameter views, the slot filter and
freezing, `.train`, `state_dict` loading checked whole, pickling, quantisation and saving.

An assembly is a subclass naming its slots and its C++ class, registered under the family data's
"assembly" name (configs/families/<family>.json): `vlmzoo.Model(config)` builds the one the config's
family names."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import fields
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from vlmzoo.config.presets import assembly_of, resolve_config
from vlmzoo.config.sources import without_sources
from vlmzoo.models import quantize as quantization
from vlmzoo.models.blocks import Blocks, view_class, watch
from vlmzoo.models.checkpoint import save_model
from vlmzoo.models.sources import attach_sources
from vlmzoo.models.validate import load_into

DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
# assembly name (family data "assembly") -> its module class; each assembly registers itself.
ASSEMBLIES: dict[str, type["AssemblyModule"]] = {}
# save_pretrained's formats -> writer(model, folder, processor). "vlmzoo" is this layer's own; the
# families layer registers "transformers" (vlmzoo.families.export), as a lower layer takes a callback.
SAVE_FORMATS: dict[str, Callable[[Any, str, Any], Any]] = {}


class OutputFields:
    """transformers' ModelOutput habits for a dataclass: indexing and unpacking give the fields that are
    not None, in order; a string index names a field."""

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


@torch.compiler.disable
def cpp_forward(module: Any, *args: Any) -> Any:
    # torch.compile(model) runs this call eagerly (dynamo cannot trace into C++) and compiles the rest.
    return module.forward(*args)


@torch.compiler.disable
def cpp_forward_outputs(module: Any, *args: Any) -> Any:
    # The decoder's full call (hidden states, attentions, inputs_embeds): eager under torch.compile too.
    return module.forward_outputs(*args)


class AssemblyModule(nn.Module):
    """The torch module over one C++ assembly. Subclasses set SLOTS (the slots it has, in order),
    ASSEMBLY (the family data's name for it) and cpp_class (the `vlmzoo._C` class that builds it), and
    add their forward. device="meta" builds the shapes only (for counting); initialize=False leaves the
    weights uninitialised, for a checkpoint about to be loaded."""

    SLOTS: tuple[str, ...] = ()
    ASSEMBLY = ""
    BLOCKS: type[Blocks] = Blocks  # the views it can call and the blocks it can call back into

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.ASSEMBLY:
            if cls.ASSEMBLY in ASSEMBLIES:
                raise ValueError(f"assembly {cls.ASSEMBLY!r} is registered twice ({ASSEMBLIES[cls.ASSEMBLY].__name__}, "
                                 f"{cls.__name__})")
            ASSEMBLIES[cls.ASSEMBLY] = cls

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any) -> Any:
        # The family's "assembly" picks the class: Model(config) of a CLIP builds a DualEncoderModel.
        if config is not None and cls.ASSEMBLY == "decoder":
            chosen = ASSEMBLIES.get(assembly_of(config, **kwargs), cls)
            if chosen is not cls:
                return chosen(config, *args, **kwargs)
        return super().__new__(cls)

    @staticmethod
    def cpp_class(config_json: str, device: str, dtype_name: str, initialize: bool) -> Any:
        raise NotImplementedError

    def __init__(self, config: str | Mapping[str, Any], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, initialize: bool = True, **overrides: Any):
        super().__init__()
        resolved = resolve_config(config, **overrides)
        dtype_name = DTYPE_NAMES.get(dtype or torch.float32)
        if dtype_name is None:
            raise ValueError(f"dtype: {dtype} is not one of {', '.join(map(str, DTYPE_NAMES))}")
        cpp = self.cpp_class(json.dumps(without_sources(resolved)), str(torch.device(device)), dtype_name,
                             bool(initialize))
        object.__setattr__(self, "_module", cpp)  # not a submodule: the views below own the parameters
        object.__setattr__(self, "_config", json.loads(cpp.config_json()))
        blocks = self.BLOCKS(self)
        object.__setattr__(self, "_blocks", blocks)
        for name, child in cpp.named_children().items():
            self._modules[name] = view_class(name, child, blocks)(child, name, blocks)
        watch(self)  # a slot replaced from Python (model.abstractor = ...) runs in the C++ forward
        blocks.register_views()
        attach_sources(self, resolved, initialize)  # slots {"from": SOURCE}: their sources' weights

    # ---- identity
    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    @property
    def name(self) -> str:
        return self._config.get("name") or self._config["family"]

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

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- torch-module habits, with a slot filter
    def named_parameters(self, slot: str | None = None, recurse: bool = True, remove_duplicate: bool = True,
                         prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
        if slot is not None and slot not in self.SLOTS:
            raise ValueError(self._unknown_slot(slot))
        for name, p in super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate):
            if slot is None or name.split(".", 1)[0] == slot:
                yield name, p

    def _unknown_slot(self, slot: str) -> str:
        return f"unknown slot {slot!r}; slots are {self.SLOTS}"

    def parameters(self, slot: str | None = None, recurse: bool = True) -> Iterator[torch.Tensor]:
        for _, p in self.named_parameters(slot, recurse=recurse):
            yield p

    def num_parameters(self, slot: str | None = None, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters(slot) if p.requires_grad or not trainable_only)

    def requires_grad_(self, requires_grad: bool = True, slot: str | None = None) -> "AssemblyModule":
        if requires_grad:
            quantization.refuse_training(self)
        for p in self.parameters(slot):
            p.requires_grad_(requires_grad)
        return self

    def freeze(self, *slots: str) -> "AssemblyModule":
        for slot in slots:
            self.requires_grad_(False, slot)
        return self

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False) -> tuple[list[str], list[str]]:
        """Copies values into the C++ parameters; returns (missing, unexpected). Everything is checked
        before anything is copied, so a failed load leaves the model unchanged: strict raises KeyError
        naming missing or unexpected keys; a shape, dtype or non-finite value raises ValueError naming
        the tensor."""
        return load_into(dict(self.named_parameters()), state_dict, strict=strict)

    def quantize(self, format: str) -> "AssemblyModule":
        """Linear layers in "bf16" (bfloat16 weights, float32 arithmetic) or "int8" (int8 weights and
        per-token activations), in place and for inference only; see vlmzoo/models/quantize.py."""
        return quantization.quantize(self, format)

    def train(self, mode: bool = True) -> "AssemblyModule":
        if mode:
            quantization.refuse_training(self)
        self._module.train(mode)
        return super().train(mode)

    # ---- saving, copying and pickling: rebuilt from the config and the weights
    def save_pretrained(self, folder: str, format: str = "vlmzoo", processor: Any = None) -> None:
        """format="vlmzoo": vlmzoo's checkpoint (resolved config JSON + safetensors), which
        `vlmzoo.from_pretrained` reads. format="transformers": a folder transformers' own class
        (LlavaForConditionalGeneration, Blip2ForConditionalGeneration, CLIPModel, ...) loads with the same
        logits; a LLaVA's processor (or word tokenizer) is written with it when given."""
        if format not in SAVE_FORMATS:
            raise ValueError(f"format: {format!r} is not one of {', '.join(map(repr, SAVE_FORMATS))}")
        SAVE_FORMATS[format](self, folder, processor)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = OrderedDict((k, v.detach().clone()) for k, v in self.state_dict().items())
        requires_grad = {k: p.requires_grad for k, p in self.named_parameters()}
        return rebuild, (type(self), self.config, state, requires_grad, self.training, self.fused)


def rebuild(cls: type[AssemblyModule], config: dict[str, Any], state: Mapping[str, torch.Tensor],
            requires_grad: Mapping[str, bool], training: bool, fused: bool) -> AssemblyModule:
    dtype = next(iter(state.values())).dtype if state else None
    model = cls(config, dtype=dtype if dtype in DTYPE_NAMES else None, initialize=False)
    quantize_like(model, state)
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    model.fused = fused
    return model.train(training)


def quantize_like(model: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Quantises a freshly built model as the model `state` was taken from, so the state loads into it."""
    format = quantization.format_of_state_dict(state)
    if format != "float":
        model.quantize(format)


def _save_vlmzoo(model: Any, folder: str, processor: Any = None) -> None:
    if processor is not None:
        raise ValueError("processor: only format=\"transformers\" writes a processor")
    save_model(model, folder)


SAVE_FORMATS["vlmzoo"] = _save_vlmzoo
