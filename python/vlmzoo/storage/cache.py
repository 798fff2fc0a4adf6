"""The user cache of what vlmzoo trains for itself (pretrained towers): one folder per entry under
`~/.cache/vlmzoo` (the environment variable VLMZOO_CACHE overrides it), named by a hash of
everything that decides its content (config, task and data parameters, seed, budget, recipe version).

An entry is a folder with `weights.safetensors` and `entry.json` (the key's inputs, the metrics,
the FLOPs it cost). It is built under a hidden name and renamed into place whole
(vlmzoo.storage.atomic.staged_folder), so a reader sees no entry or a complete one, never a half-written one."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file

from vlmzoo.storage import atomic  # called through the module: a test stands in for one of its writers

ENTRY_FILE = "entry.json"
WEIGHTS_FILE = "weights.safetensors"


def cache_root() -> Path:
    """VLMZOO_CACHE when set, else ~/.cache/vlmzoo (created on first write)."""
    override = os.environ.get("VLMZOO_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "vlmzoo"


def cache_key(spec: Mapping[str, Any]) -> str:
    """A stable hash of `spec` (JSON-able): equal specs share an entry, any change makes a new one."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


@dataclass
class CacheEntry:
    folder: Path
    record: dict[str, Any]  # entry.json: "spec", "metrics", "pretraining_flops", ...
    state_dict: dict[str, torch.Tensor]
    hit: bool  # True when read from the cache, False when just built


def entry_folder(kind: str, spec: Mapping[str, Any]) -> Path:
    return cache_root() / kind / cache_key(spec)


def read_entry(folder: Path) -> CacheEntry | None:
    """The entry in `folder`, or None when there is none (a complete entry always has both files)."""
    record_path, weights_path = folder / ENTRY_FILE, folder / WEIGHTS_FILE
    if not (record_path.is_file() and weights_path.is_file()):
        return None
    return CacheEntry(folder, json.loads(record_path.read_text()), load_file(str(weights_path)), hit=True)


def write_entry(folder: Path, record: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Writes the entry whole: staged in a hidden sibling folder, fsynced, renamed into place."""
    with atomic.staged_folder(folder) as staging:
        atomic.atomic_save_safetensors({k: v.detach().contiguous().cpu() for k, v in state_dict.items()},
                                staging / WEIGHTS_FILE, metadata={"format": "pt"})
        atomic.atomic_write_text(staging / ENTRY_FILE, json.dumps(record, indent=2, sort_keys=True))


def cached(kind: str, spec: Mapping[str, Any],
           build: Callable[[], tuple[Mapping[str, Any], Mapping[str, torch.Tensor]]]) -> CacheEntry:
    """The entry for `spec`: read from the cache when present, else `build()` -> (record, state_dict)
    is run once, written atomically, and returned (hit=False)."""
    folder = entry_folder(kind, spec)
    entry = read_entry(folder)
    if entry is not None:
        return entry
    record, state_dict = build()
    record = {**record, "spec": json.loads(json.dumps(spec, default=str)), "key": folder.name}
    write_entry(folder, record, state_dict)
    return CacheEntry(folder, record, dict(state_dict), hit=False)
