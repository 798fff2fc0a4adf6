"""Named model presets (the JSON files under configs/) and config loading."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

from . import _C

ConfigLike = "str | Path | Mapping[str, Any]"


def _config_roots() -> list[Path]:
    here = Path(__file__).resolve().parent
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
    path = Path(config)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        return json.loads(path.read_text())
    raise ValueError(f"unknown preset {config!r}; presets are: {', '.join(sorted(files))}")


def resolve_config(config: str | Path | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Validated config with every default filled in. `overrides` merge into slots:
    resolve_config("llava-1.5-tiny", llm={"vocab": 1000}); an override that changes a slot's
    kind replaces the slot, since the old kind's fields may not apply to the new one; so does one
    taken from a pretrained tower ({"from": "clip-tiny-shapes"}, vlmzoo.towers)."""
    raw = load_config(config)
    for key, value in overrides.items():
        old = raw.get(key)
        same_kind = isinstance(old, Mapping) and value.get("kind", old.get("kind")) == old.get("kind") \
            and "from" not in value if isinstance(value, Mapping) else False
        if same_kind:
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    from .towers import resolve_with_towers  # slots written {"from": TOWER} (vlmzoo.towers)

    return resolve_with_towers(raw, lambda config: json.loads(_C.resolve_config(json.dumps(config))))


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
