"""The flamingo family (IDEFICS v1, OpenFlamingo): checkpoint layouts both ways and the processor."""
from .idefics import convert_idefics, idefics_hf_config, save_idefics_for_transformers

__all__ = ["convert_idefics", "idefics_hf_config", "save_idefics_for_transformers"]
