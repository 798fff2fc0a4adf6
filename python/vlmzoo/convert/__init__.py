"""Checkpoint layouts: reading safetensors (single or sharded), vlmzoo's own format, and pure
converters from Hugging Face layouts. Nothing here builds a model (see vlmzoo.loading)."""
from .checkpoint import read_safetensors_folder, save_model
from .hf import HF_CONVERTERS

__all__ = ["save_model", "read_safetensors_folder", "HF_CONVERTERS"]
