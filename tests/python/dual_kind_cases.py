"""The kinds the dual-encoder suite (test_dual_encoder_kinds.py) covers, per slot: preset + overrides
that put each kind in a tiny dual encoder. test_slot_kinds counts these as covered too."""
from __future__ import annotations

DUAL_KIND_CASES: dict[str, dict[str, tuple[str, dict]]] = {
    "vision": {
        "vit-class": ("clip-tiny", {}),
        "vit-map": ("siglip-tiny", {}),
    },
    "llm": {
        "clip_text": ("clip-tiny", {}),
        "siglip_text": ("siglip-tiny", {}),
    },
    "head": {
        "contrastive": ("clip-tiny", {}),
        "contrastive-sigmoid": ("siglip-tiny", {}),
    },
}
