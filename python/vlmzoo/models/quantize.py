"""Quantised inference: every linear layer of a model (csrc/nn/linear.h, nn::Linear) stored as

  "bf16"  bfloat16 weights packed once, float32 arithmetic (vlmzoo::linear_bf16): half the bytes of float32;
          on a CPU with AMX-BF16 tiles, a linear over more than 32 rows (prefill) rounds its input to bfloat16
          and multiplies on the tiles instead (float32 accumulation, as oneDNN's bf16 matmul), several times
          faster; `set_bf16_amx(False)` keeps float32 arithmetic everywhere (`bf16_amx()` says which runs);
  "int8"  int8 weights per output channel, activations quantised per token at run time, int32 accumulation,
          float32 epilogue (vlmzoo::linear_int8): a quarter of the bytes, about 3x float32's arithmetic rate
          on AVX512-VNNI.

Attention, norms, embeddings and the patch convolution stay in the model's dtype. Packing happens once,
from the float weights (load or train a float model, then quantise it); it cannot be undone or repeated.

A quantised model is for inference only: `train()` (and so vlmzoo.train) raises, and saving it
(save_pretrained, the transformers export) raises too, because a checkpoint holds float weights. Its
state_dict and named_parameters name the packed tensors in place of each linear's `weight`:
`<linear>.weight_bf16` (bfloat16 panels), or `<linear>.weight_int8` (int8 panels), `.weight_scales`
(float32 [out]) and `.weight_col_sums` (int32 [out]); biases stay float. Pickling and deepcopy work (the
copy is quantised the same way, then loaded)."""
from __future__ import annotations

from typing import Any, Mapping

from vlmzoo.extension import _C

FORMATS = ("bf16", "int8")
# The parameter that replaces a linear's `weight` in each format: how a state dict shows its format.
PACKED_WEIGHT = {"bf16": "weight_bf16", "int8": "weight_int8"}


def set_bf16_amx(enabled: bool) -> None:
    """Process-wide: whether bf16 linears over more than 32 rows run on AMX tiles where the CPU has them
    (activations rounded to bfloat16). On by default; VLMZOO_BF16_AMX=0 in the environment starts it off."""
    _C.set_bf16_amx(bool(enabled))


def bf16_amx() -> bool:
    """True when bf16 linears over more than 32 rows run on AMX tiles: the switch is on and the CPU has AMX-BF16
    (the AVX-512 kernels use them; a process forced to a lower level with VLMZOO_CPU_ISA stays float32)."""
    return bool(_C.bf16_amx())


def weight_format(model: Any) -> str:
    """"float", "bf16" or "int8": how the model's linear layers store their weights."""
    cpp = getattr(getattr(model, "_module", None), "cpp_module", None)
    return "float" if cpp is None else _C.weight_format(cpp)


def quantize(model: Any, format: str) -> Any:
    """Packs every linear layer of `model` (a vlmzoo.Model or DualEncoderModel) into `format`, in place,
    and puts the model in eval mode. Returns the model."""
    if format not in FORMATS:
        raise ValueError(f"quantize: format {format!r} is not one of {', '.join(map(repr, FORMATS))}")
    current = weight_format(model)
    if current != "float":
        raise RuntimeError(f"quantize: this model is already quantised ({current}); quantise a float model once "
                           "(build or load it again to choose another format)")
    model.eval()
    _C.set_weight_format(model._module.cpp_module, format)
    for name, child in model._module.named_children().items():
        model._modules[name].mirror(child)  # the views now show the packed parameters
    return model


def refuse_training(model: Any) -> None:
    """Raises if the model is quantised: packed weights get no gradient."""
    current = weight_format(model)
    if current != "float":
        raise RuntimeError(f"this model is quantised ({current}) for inference: it cannot be trained. Train the "
                           "float model, then quantise a copy of it")


def refuse_saving(model: Any, what: str) -> None:
    """Raises if the model is quantised: checkpoints hold float weights."""
    current = weight_format(model)
    if current != "float":
        raise ValueError(f"{what}: this model is quantised ({current}) and checkpoints hold float weights; save "
                         "the float model and quantise it after loading")


def format_of_state_dict(state: Mapping[str, Any]) -> str:
    """The format a state dict was taken in ("float" when no linear is packed)."""
    for format, leaf in PACKED_WEIGHT.items():
        if any(key.rsplit(".", 1)[-1] == leaf for key in state):
            return format
    return "float"
