"""Named model presets (the JSON files under configs/), family data, and the core's own config check:
the plain pieces `vlmzoo.config.presets.resolve_config` builds on."""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any, Mapping

from vlmzoo.config.paths import looks_like_path, why_missing
from vlmzoo.extension import _C
from vlmzoo.data.tokenizer import WordTokenizer

ConfigLike = "str | Path | Mapping[str, Any]"


def _config_roots() -> list[Path]:
    here = Path(__file__).resolve().parent.parent  # the vlmzoo package
    # Installed wheels carry the presets inside the package; a source checkout has them at the top.
    return [p for p in (here / "configs", here.parent.parent / "configs") if p.is_dir()]


def _preset_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for root in _config_roots():
        for path in sorted(root.glob("*/*.json")):
            if path.parent.name != "families":  # family defaults, not presets
                files.setdefault(path.stem, path)
    return files


def presets(group: str | None = None) -> list[str]:
    """Names of the built-in presets, optionally only one group (tiny, small, full)."""
    return sorted(name for name, path in _preset_files().items() if group is None or path.parent.name == group)


def preset_group(name: str) -> str:
    return _preset_files()[name].parent.name


def load_config(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The raw config dict from a preset name, a JSON path or a dict (copied)."""
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    files = _preset_files()
    if isinstance(config, str) and config in files:
        return json.loads(files[config].read_text())
    path = Path(config).expanduser()
    if path.is_file():
        return json.loads(path.read_text())
    if path.is_dir():
        raise ValueError(f"config {str(config)!r} is a folder; a config is a preset name, a JSON file or a dict "
                         "(a checkpoint folder loads with vlmzoo.from_pretrained; vlmzoo.info reads it too)")
    if not isinstance(config, str) or looks_like_path(config):
        raise FileNotFoundError(f"config file {str(config)!r} does not exist: {why_missing(path)} "
                                "(a config is a preset name, a JSON file or a dict)")
    close = difflib.get_close_matches(config, list(files), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise ValueError(f"unknown preset {config!r} (and no file of that name here); {hint}presets are: "
                     f"{', '.join(sorted(files))}")


def merge_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` merged into slots: an override that changes a slot's kind replaces the slot, since the
    old kind's fields may not apply to the new one; so does one taken from elsewhere ({"from": ...})."""
    for key, value in overrides.items():
        old = raw.get(key)
        same_kind = isinstance(old, Mapping) and value.get("kind", old.get("kind")) == old.get("kind") \
            and "from" not in value if isinstance(value, Mapping) else False
        if same_kind:
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def check_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The C++ core's check of a config without "from" slots: every default filled in, errors naming the JSON path."""
    return json.loads(_C.resolve_config(json.dumps(raw)))


def task_overrides(config: Mapping[str, Any], tokenizer: WordTokenizer) -> dict[str, Any]:
    """Slot overrides that make `config` speak `tokenizer`: its special ids, and a vocab at least as large."""
    llm = config["llm"]
    return {
        "fusion": {"image_token_id": tokenizer.image_id},
        "llm": {
            "vocab": max(llm["vocab"], len(tokenizer)),
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        },
    }


def families() -> dict[str, dict[str, Any]]:
    """Each family's data (configs/families/<name>.json, the files the C++ core compiles in): its slot
    defaults, trainable slots per training stage (`stages`, `default_stage`) and the Hugging Face
    model types it loads (`hf_model_types`)."""
    return {name: json.loads(_C.family_json(name)) for name in _C.family_names()}


def family(name: str) -> dict[str, Any]:
    known = families()
    if name not in known:
        raise ValueError(f"family {name!r} is not one of {', '.join(sorted(known))}")
    return known[name]


def kinds(slot: str) -> list[str]:
    """The kinds registered in the C++ core for `slot` (vision, abstractor, fusion, llm, head)."""
    return list(_C.registered_kinds(slot))


def assembly_of(config: str | Path | Mapping[str, Any], **overrides: Any) -> str:
    """Which assembly the config's family builds ("decoder", "dual_encoder"; "assembly" in the family data).
    An unknown family is left to the model's own config check, which names it."""
    family_name = overrides.get("family") or load_config(config).get("family", "llava")
    return families().get(family_name, {}).get("assembly", "decoder")
