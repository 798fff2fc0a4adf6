"""Slots taken from elsewhere: `"vision": {"from": SOURCE}`, where SOURCE is
- a named in-house tower (vlmzoo.config.towers: "clip-tiny-shapes"),
- a checkpoint folder, vlmzoo's or Hugging Face's (the vision tower of a CLIP or SigLIP folder, the language
  model of a Llama, OPT or LLaVA folder, the Q-Former of a BLIP-2 folder: the slot of the same name there),
- or a Hugging Face Hub id ("owner/name", with "revision" beside "from" to pin one), found in the
  huggingface_hub cache.

Resolving stays pure: it reads configs only (a folder's config.json; a Hub id only from the cache, never
the network: `vlmzoo.build` and `vlmzoo.from_pretrained` download, the models layer refuses an uncached id
naming it). The slot becomes the source's slot config before the C++ core sees it; beside "from" a slot may
set only what does not change the weights (towers.READ_FIELDS) or repeat the source's values. The resolved
slot keeps "from" (and, for a Hub id, the commit as "revision"), so a model and its saved config say where
every slot came from. How a folder's config and weights are read is the families layer's, registered in
FOLDER_READERS (a lower layer takes a callback)."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from vlmzoo.config.paths import folder_problem
from vlmzoo.config.towers import FROM, READ_FIELDS, SLOTS, TOWERS, tower, tower_slot_config

REVISION = "revision"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# "config": folder -> the vlmzoo config of the model saved there (no tensors read);
# "weights": folder -> its tensors under vlmzoo names. Registered by vlmzoo.families.sources.
FOLDER_READERS: dict[str, Callable[[Path], Any]] = {}


class SourceNotCached(FileNotFoundError):
    """A Hub id the huggingface_hub cache does not hold (offline, or not downloaded yet)."""


def is_tower(source: Any) -> bool:
    return isinstance(source, str) and source in TOWERS


def locate(source: Any, revision: str | None = None, where: str = FROM) -> tuple[Path, str | None]:
    """(folder, commit) for a checkpoint folder (commit None) or a Hub id in the huggingface_hub cache."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"{where}: expected a tower name, a checkpoint folder or a Hub id, got {source!r}")
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"{where}: {folder_problem(path)}")
    if not HUB_ID.match(source):
        raise ValueError(f"{where}: unknown tower {source!r}; towers: {', '.join(sorted(TOWERS))} (a source may also "
                         "be a checkpoint folder or a Hugging Face Hub id owner/name)")
    try:  # inside: huggingface_hub is optional (the reference extra), needed for Hub ids only
        from huggingface_hub import constants, snapshot_download
    except ImportError as error:
        raise ImportError(f"{where}: {source!r} looks like a Hub id, which needs huggingface_hub "
                          "(pip install 'vlmzoo[reference]')") from error
    try:
        folder = Path(snapshot_download(source, revision=revision, local_files_only=True))
    except Exception as error:  # LocalEntryNotFoundError, RevisionNotFoundError, a malformed cache
        at = f" at revision {revision!r}" if revision else ""
        raise SourceNotCached(
            f"{where}: the Hub id {source!r}{at} is not in the huggingface_hub cache ({constants.HF_HUB_CACHE}); "
            f"resolving a config never downloads: fetch it with vlmzoo.from_pretrained({source!r}) or vlmzoo.build "
            f"(HF_HUB_OFFLINE unset), or `huggingface-cli download {source}`") from error
    return folder, folder.name  # a snapshot folder is named by its commit


def origins(raw: Mapping[str, Any]) -> dict[str, str]:
    """slot -> the source its "from" names (slots without one are left out)."""
    return {slot: raw[slot][FROM] for slot in SLOTS if isinstance(raw.get(slot), Mapping) and FROM in raw[slot]}


def source_slot(slot: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the source's config of `slot`, what the resolved slot records: "from" and, for a Hub id, "revision")."""
    source, where = fields[FROM], f"{slot}.{FROM}"
    if is_tower(source) or not isinstance(source, str) or "/" not in source and not Path(source).exists():
        tower(source, where)  # an unknown name is an unknown tower
        return tower_slot_config(source), {FROM: source}
    try:
        folder, commit = locate(source, fields.get(REVISION), where)
    except (ValueError, FileNotFoundError):
        if "kind" in fields:  # a resolved slot (a saved model's): its fields are complete, the record stays
            return ({k: v for k, v in fields.items() if k not in (FROM, REVISION)},
                    {k: fields[k] for k in (FROM, REVISION) if k in fields})
        raise
    if "config" not in FOLDER_READERS:
        raise RuntimeError(f"{where}: no folder reader registered (import vlmzoo, which registers vlmzoo.families')")
    config = FOLDER_READERS["config"](folder)
    if not isinstance(config.get(slot), Mapping) or config[slot].get("kind") in (None, "none", "identity"):
        raise ValueError(f"{where}: the checkpoint {source!r} (family {config.get('family')!r}) has no {slot} slot "
                         f"to lend (its {slot}: {config.get(slot, {}).get('kind') if isinstance(config.get(slot), Mapping) else None!r})")
    record = {FROM: source, **({REVISION: commit} if commit else {})}
    return dict(config[slot]), record


def expand_slot(slot: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """{"from": SOURCE, ...} -> (the source's slot config with the allowed fields of the user merged in, record)."""
    own, record = source_slot(slot, fields)
    readable = READ_FIELDS.get(slot, set())
    expanded = {k: v for k, v in own.items() if k not in readable}  # the host family's defaults apply
    for key, value in fields.items():
        if key in (FROM, REVISION):
            continue
        if key in readable:
            expanded[key] = value
        elif key in own and own[key] != value:
            what = "tower" if is_tower(fields[FROM]) else "source"
            raise ValueError(f"{slot}.{key}: the {what} {fields[FROM]!r} fixes {key}={own[key]!r}; got {value!r} "
                             f"(beside \"from\" a slot may set only {', '.join(sorted(readable)) or 'nothing'} "
                             f"or repeat the {what}'s values)")
        else:
            expanded[key] = value
    return expanded, record


def resolve_with_sources(raw: dict[str, Any], resolve: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """`resolve` (the C++ config check) applied to `raw` with its "from" slots expanded; the resolved
    slots keep their "from" (and "revision") so the model built from them loads the sources' weights."""
    named = origins(raw)
    if not named:
        return resolve(raw)
    expanded, records = copy.deepcopy(raw), {}
    for slot in named:
        expanded[slot], records[slot] = expand_slot(slot, raw[slot])
    resolved = resolve(expanded)
    for slot, record in records.items():
        resolved[slot] = {**record, **resolved[slot]}
    return resolved


def without_sources(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the C++ core reads it (no "from" or "revision" keys)."""
    return {k: ({f: v for f, v in value.items() if f not in (FROM, REVISION)} if isinstance(value, Mapping) else value)
            for k, value in resolved.items()}


def source_records(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """slot -> where it came from ({"from": ..., "revision": ...}), for `vlmzoo info` and saved models."""
    return {slot: {k: config[slot][k] for k in (FROM, REVISION) if k in config[slot]} for slot in origins(config)}
