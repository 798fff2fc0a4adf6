"""Fuyu: Hugging Face FuyuForCausalLM folders both ways, and FuyuProcessor's layout."""
from .checkpoint import convert_fuyu, fuyu_config, fuyu_hf_config, save_fuyu_for_transformers

__all__ = ["convert_fuyu", "fuyu_config", "fuyu_hf_config", "save_fuyu_for_transformers"]
