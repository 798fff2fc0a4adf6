"""Two design facts a study row states beside its accuracy, so a table of five families reads without
the configs: how the model sees the image, and which of its slots were trained."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from vlmzoo.config.presets import assembly_of
from vlmzoo.config.towers import SLOTS


def image_path(config: Mapping[str, Any]) -> str:
    """How the image reaches the text: "joint encoder" (BEiT-3's multiway layers see both), "cross-attention"
    (Flamingo: gated blocks read the visual tokens, which never enter the sequence), "raw patches"
    (Fuyu: no encoder, projected patches spliced into the sequence), "visual tokens" (LLaVA, BLIP-2: an
    encoder and an abstractor, their tokens spliced into the sequence), "two towers" (CLIP/SigLIP)."""
    assembly = assembly_of(dict(config))
    if assembly == "multiway_encoder":
        return "joint encoder"
    if assembly == "dual_encoder":
        return "two towers"
    if config.get("fusion", {}).get("kind") == "cross_attention":
        return "cross-attention"
    if config.get("vision", {}).get("kind") == "patch_linear":
        return "raw patches"
    return "visual tokens"


def trained_slots(parameter_names: Iterable[str], trainable: Iterable[str] = SLOTS, lora: bool = False) -> str:
    """The trained slots that hold parameters, in slot order ("abstractor+llm"): a slot named trainable
    without weights (LLaVA's splice fusion) trains nothing and is left out. lora: the LM trained through
    LoRA adapters, its weights frozen ("abstractor+llm (LoRA)")."""
    chosen = set(trainable)
    holding = {name.split(".", 1)[0] for name in parameter_names}
    trained = "+".join(slot for slot in SLOTS if slot in chosen and slot in holding) or "none"
    return f"{trained} (LoRA)" if lora and "llm" in chosen else trained
