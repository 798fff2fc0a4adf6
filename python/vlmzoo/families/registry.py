"""The family folders, one line each, and the lookups through them. Which family loads which Hugging Face
model types is family data (configs/families/*.json, `hf_model_types`): a model type is looked up there,
then in that family's folder, and a folder whose converters disagree with its family data is an error
at import."""
from __future__ import annotations

from typing import Any, Callable

from vlmzoo.config.presets import families
from vlmzoo.families import beit3, blip2, clip, flamingo, fuyu, llava
from vlmzoo.families.common.bert import BEYOND, convert_bert_as_qformer
from vlmzoo.families.clip.open_clip import is_open_clip_folder, read_open_clip_folder
from vlmzoo.families.parts import Converter, FamilyParts

# Adding a family on the Python side: its folder under families/, and its line here.
FAMILY_FOLDERS: dict[str, FamilyParts] = {parts.name: parts for parts in [
    llava.FAMILY,
    blip2.FAMILY,
    clip.CLIP,
    clip.SIGLIP,
    fuyu.FAMILY,
    flamingo.FAMILY,
    beit3.FAMILY,
]}

# Checkpoint folders in a layout other than Hugging Face's config.json: (is it one, read it), tried first.
# A reader gives (vlmzoo config, tensors under vlmzoo names, unknown names); with_tensors=False reads no tensors.
FOLDER_LAYOUTS: list[tuple[Callable[[Any], bool], Callable[..., Any]]] = [
    (is_open_clip_folder, read_open_clip_folder),
]


def folder_loader(folder: Any) -> Callable[..., Any] | None:
    """The loader (folder, dtype) -> model of a folder a family recognises by its files, or None."""
    return next((load for parts in FAMILY_FOLDERS.values() if parts.folder_loader
                 for is_one, load in [parts.folder_loader] if is_one(folder)), None)


def folder_processor(folder: Any) -> Callable[..., Any] | None:
    """The processor loader of a folder a family recognises by its files, or None."""
    return next((load for parts in FAMILY_FOLDERS.values() if parts.folder_processor
                 for is_one, load in [parts.folder_processor] if is_one(folder)), None)


def folder_layout(folder: Any) -> Callable[..., Any] | None:
    """The reader of a folder in one of FOLDER_LAYOUTS, None for a Hugging Face or vlmzoo folder."""
    return next((read for is_one, read in FOLDER_LAYOUTS if is_one(folder)), None)


# What a folder of another supported architecture holds that vlmzoo cannot load yet, by model type.
UNSUPPORTED: dict[str, str] = {
    "blip": "model_type 'blip' (BLIP, the first version: a ViT with a BERT text decoder) is not supported; "
            "BLIP-2 (model_type 'blip-2') and InstructBLIP ('instructblip') are",
    "instructblipvideo": "model_type 'instructblipvideo' (InstructBLIP-Video: frames through the Q-Former) is not "
                         "supported; InstructBLIP on images (model_type 'instructblip') is",
}


def _family_of_model_type() -> dict[str, str]:
    """Hugging Face model_type -> family, from the family data; checked against the folders."""
    owners: dict[str, str] = {}
    for name, data in families().items():
        types = list(data.get("hf_model_types", []))
        parts = FAMILY_FOLDERS.get(name)
        if parts is None:
            continue  # a family the core knows with no Python folder yet: nothing loads into it
        if sorted(types) != sorted(parts.converters):
            raise ValueError(f"configs/families/{name}.json hf_model_types {sorted(types)} differ from the model "
                             f"types vlmzoo/families' {name} folder converts {sorted(parts.converters)}")
        for model_type in types:
            owners[model_type] = name
    return owners


FAMILY_OF_MODEL_TYPE = _family_of_model_type()
HF_CONVERTERS: dict[str, Converter] = {
    model_type: FAMILY_FOLDERS[family].converters[model_type] for model_type, family in FAMILY_OF_MODEL_TYPE.items()}
PROCESSOR_CLASSES: dict[str, Callable[..., Any]] = {
    name: loader for parts in FAMILY_FOLDERS.values() for name, loader in parts.processors.items()}
MODEL_TYPE_PROCESSORS: dict[str, str] = {
    model_type: name for parts in FAMILY_FOLDERS.values() for model_type, name in parts.model_type_processors.items()}


# Layouts read only as a part ({"from": FOLDER} in one slot), never as a whole model: no family lists them.
PART_CONVERTERS: dict[str, Converter] = {"bert": convert_bert_as_qformer}
# What such a part leaves to the host's initialisation, by model type: slot -> patterns over vlmzoo names.
PART_LEAVES_TO_INIT: dict[str, dict[str, list[str]]] = BEYOND


def part_converter_for(model_type: Any, where: str) -> Converter:
    """The converter of a folder lending one slot: a whole-model layout (a Llama, a CLIP), or a part-only one (a BERT)."""
    if model_type in PART_CONVERTERS:
        return PART_CONVERTERS[model_type]
    if model_type in HF_CONVERTERS:
        return HF_CONVERTERS[model_type]
    known = sorted({*HF_CONVERTERS, *PART_CONVERTERS})
    raise ValueError(f"{where}: model_type {model_type!r} cannot lend a slot; supported: {', '.join(known)}")


def converter_for(model_type: Any, where: str) -> Converter:
    """The converter of a config.json's model_type, or a ValueError naming what is supported."""
    if model_type in UNSUPPORTED:
        raise ValueError(f"{where}: {UNSUPPORTED[model_type]}")
    if model_type not in HF_CONVERTERS:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(HF_CONVERTERS))}")
    return HF_CONVERTERS[model_type]


def family_parts(family: str) -> FamilyParts | None:
    return FAMILY_FOLDERS.get(family)
