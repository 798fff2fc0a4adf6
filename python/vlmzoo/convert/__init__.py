"""Loading checkpoints of other layouts (Hugging Face) and vlmzoo's own."""
from .checkpoint import from_pretrained, load_model, read_safetensors_folder, save_model

__all__ = ["from_pretrained", "load_model", "save_model", "read_safetensors_folder"]
