"""Parameter counts, visual tokens and FLOPs, all from the C++ core: the model is built on the meta
device (shapes, no memory) and each slot reports its own forward FLOPs, so no formula is repeated
here and a 7B or 13B config is described without allocating it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from vlmzoo.config.presets import resolve_config
from vlmzoo.config.sources import FOLDER_READERS, source_records
from vlmzoo.models.model import Model

# Slots always listed; fusion and head appear only when they hold parameters.
_ALWAYS = ("vision", "abstractor", "llm")


def _meta_model(config: Mapping[str, Any] | str):
    return Model(config if isinstance(config, str) else dict(config), device="meta", initialize=False)


def visual_tokens_per_image(config: Mapping[str, Any] | str) -> int:
    return _meta_model(config).visual_tokens_per_image


def parameter_counts(config: Mapping[str, Any] | str) -> dict[str, int]:
    """Parameters per slot and in total, counted on the model built on the meta device."""
    return _counts(_meta_model(config))


def _counts(model: Any) -> dict[str, int]:
    counts = {slot: 0 for slot in _ALWAYS}
    for name, p in model.named_parameters():
        slot = name.split(".", 1)[0]
        counts[slot] = counts.get(slot, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


def forward_flops(config: Mapping[str, Any] | str, text_tokens: int = 64, images: int = 1) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one forward over `images` images and `text_tokens` text tokens, per
    slot as each slot of the core counts them (attention's full score matrix included; a vision
    tower counts only the layers it runs)."""
    flops = _meta_model(config)._module.forward_flops(int(text_tokens), int(images))
    return {name: int(value) for name, value in flops.items()}


# Image sizes (height, width) at which a vision kind that reads any size (patch_linear) is described.
IMAGE_SIZES = ((224, 224), (480, 640), (1080, 1920))


def visual_tokens_by_image_size(model: Any, sizes=IMAGE_SIZES) -> dict[str, int]:
    """{"HxW": visual tokens} at the nominal size and `sizes`; empty when the count is one constant."""
    if not hasattr(model._module, "visual_tokens_for_image") or not model.visual_tokens_per_image:
        return {}
    nominal = model.config["vision"].get("image_size")
    sizes = ([(nominal, nominal)] if nominal else []) + list(sizes)
    tokens = {f"{h}x{w}": model._module.visual_tokens_for_image(h, w) for h, w in sizes}
    return tokens if len(set(tokens.values())) > 1 else {}


def info(config: str | Path | Mapping[str, Any], text_tokens: int = 64, images: int = 1) -> dict[str, Any]:
    """Parameters (total and per slot), visual tokens per image (and, when they depend on the image,
    per image size), forward FLOPs and the sources of slots taken from elsewhere ({"from": ...}) of a
    config: a preset name, a JSON file, a dict, or a checkpoint folder (vlmzoo's or Hugging Face's,
    whose config is read as vlmzoo.from_pretrained reads it; its weights are not, but for a torchscale
    BEiT-3 folder, whose head only its weights tell)."""
    if isinstance(config, (str, Path)) and Path(config).expanduser().is_dir():
        if "config" not in FOLDER_READERS:
            raise RuntimeError("no folder reader registered (import vlmzoo, which registers vlmzoo.families')")
        folder = Path(config).expanduser()
        read = FOLDER_READERS["config"](folder)
        config = {**read, "name": read.get("name") or folder.name}
    resolved = resolve_config(config)
    model = _meta_model(resolved)
    by_size = visual_tokens_by_image_size(model)
    return {
        "name": resolved["name"] or (config if isinstance(config, str) else resolved["family"]),
        "family": resolved["family"],
        "parameters": _counts(model),
        "visual_tokens_per_image": model.visual_tokens_per_image,
        **({"visual_tokens_by_image_size": by_size} if by_size else {}),
        "text_tokens": text_tokens,
        "images": images,
        "forward_flops": {k: int(v) for k, v in model._module.forward_flops(int(text_tokens), int(images)).items()},
        "sources": source_records(resolved),  # slot -> {"from": ..., "revision": ...}: where its weights come from
    }
