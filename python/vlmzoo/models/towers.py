"""The weights of in-house towers ({"from": NAME}, vlmzoo.config.towers), read from the user cache. Nothing here trains: a tower not pretrained yet is refused with the command
that makes it (the training layer's vlmzoo.build, train, compare and pretrain make it on first use)."""
from __future__ import annotations

from typing import Any

import torch

from vlmzoo.config.towers import FROM, tower
from vlmzoo.storage.cache import cache_root, entry_folder, read_entry


class TowerNotPretrained(RuntimeError):
    """A config names an in-house tower whose weights are not in the cache yet."""


_ENTRIES: dict[tuple[str, str], Any] = {}  # (tower, cache folder) -> its entry, read once per process


def tower_entry(name: str):
    """The tower's cache entry, or None when it is not pretrained yet (an absent entry is not remembered)."""
    key = (name, str(cache_root()))
    if key not in _ENTRIES:
        entry = read_entry(entry_folder("pretrain", tower(name).spec()))
        if entry is None:
            return None
        _ENTRIES[key] = entry
    return _ENTRIES[key]


def forget_entries() -> None:
    """Drops the entries read so far (a test that swaps the cache folder or the towers calls it)."""
    _ENTRIES.clear()


def tower_state(name: str, where: str = FROM) -> dict[str, torch.Tensor]:
    """The lent slot's weights, named as in the tower's model ("vision.layers.0...")."""
    t = tower(name, where)
    entry = tower_entry(name)
    if entry is None:
        raise TowerNotPretrained(f"{where}: the tower {name!r} is not pretrained yet (no entry under {cache_root()}); "
                                 f"run `{t.command}`, or build through vlmzoo.build / vlmzoo.train / vlmzoo.compare, "
                                 "which pretrain it first")
    prefix = t.slot + "."
    return {k: v for k, v in entry.state_dict.items() if k.startswith(prefix)}
