"""`resolve_config`: a config (preset name, JSON path or dict) with every default filled in and its
slots taken from elsewhere ({"from": ...}) expanded. Pure: it reads configs and family data, never
trains, downloads or builds a model. The plain pieces (presets, family data) live in library.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from vlmzoo.config.library import (  # noqa: F401  (the public names of vlmzoo.config.presets)
    assembly_of, check_config, families, family, kinds, load_config, merge_overrides, preset_group, presets,
    task_overrides)
from vlmzoo.config.sources import resolve_with_sources


def resolve_config(config: str | Path | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Validated config with every default filled in. `overrides` merge into slots:
    resolve_config("llava-1.5-tiny", llm={"vocab": 1000}); an override that changes a slot's
    kind replaces the slot, since the old kind's fields may not apply to the new one; so does one
    taken from elsewhere ({"from": SOURCE}: a tower, a checkpoint folder or a Hub id; vlmzoo.config.sources)."""
    raw = merge_overrides(load_config(config), overrides)
    return resolve_with_sources(raw, check_config)
