"""The kinds the multiway-encoder suite (test_multiway_encoder_kinds.py) covers, per slot: preset +
overrides that put each kind in a tiny BEiT-3. test_slot_kinds counts these as covered too."""
from __future__ import annotations

MULTIWAY_KIND_CASES: dict[str, dict[str, tuple[str, dict]]] = {
    "vision": {
        "beit3_patch": ("beit3-tiny", {}),
    },
    "llm": {
        "multiway": ("beit3-tiny", {}),
        "multiway-vl_expert": ("beit3-tiny", {"llm": {"vl_expert_layers": 1}}),
    },
    "head": {
        "vqa": ("beit3-tiny", {}),
        "retrieval": ("beit3-tiny", {"head": {"kind": "retrieval"}}),
        "image_classification": ("beit3-tiny", {"head": {"kind": "image_classification", "classes": 5}}),
    },
}
