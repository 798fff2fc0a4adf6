"""Fuyu: Hugging Face FuyuForCausalLM folders both ways (checkpoint.py), and FuyuProcessor's layout
(processor.py, loaded on first use: the processing package registers it while it is itself importing)."""
from typing import Any

from .checkpoint import convert_fuyu, fuyu_config, fuyu_hf_config, save_fuyu_for_transformers

__all__ = ["convert_fuyu", "fuyu_config", "fuyu_hf_config", "save_fuyu_for_transformers", "FuyuImagePatches",
           "FuyuProcessor"]


def __getattr__(name: str) -> Any:
    if name in ("FuyuProcessor", "FuyuImagePatches"):
        from . import processor

        return getattr(processor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
