"""A model's slots taken from elsewhere ({"from": SOURCE}, vlmzoo.config.sources) receive their source's
weights: an in-house tower's from the user cache (vlmzoo.models.towers), a checkpoint folder's or a cached Hub
id's through the families layer's reader. Every parameter of the slot must have a source weight of the same
shape, checked for all slots before anything is copied; source weights the slot does not use (a pooling head
the host does not build) are left out. Nothing here trains or downloads."""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from vlmzoo.config.sources import FOLDER_READERS, REVISION, is_tower, locate, origins
from vlmzoo.config.towers import FROM, tower
from vlmzoo.models.towers import tower_state


def source_state(slot: str, source: str, revision: str | None = None) -> dict[str, torch.Tensor]:
    """The source's weights of `slot`, named as the host names them ("vision.layers.0...")."""
    where = f"{slot}.{FROM}"
    if is_tower(source):
        lent = tower(source, where).slot
        return {slot + k[len(lent):]: v for k, v in tower_state(source, where).items()}
    folder, _ = locate(source, revision, where)
    prefix = slot + "."
    return {k: v for k, v in FOLDER_READERS["weights"](folder).items() if k.startswith(prefix)}


def left_to_init(slot: str, source: str) -> list[str]:
    """Patterns of the slot's parameters the source has no weights for by design (they keep the host's init)."""
    if is_tower(source):
        return []
    folder, _ = locate(source, None, f"{slot}.{FROM}")
    return FOLDER_READERS["leaves_to_init"](folder).get(slot, [])


def load_sources(model: Any) -> None:
    """Copies each "from" slot's source weights into `model` (all checked first)."""
    copies = []
    for slot, source in origins(model._config).items():
        own = dict(model.named_parameters(slot))
        weights = source_state(slot, source, model._config[slot].get(REVISION))
        kept = left_to_init(slot, source)
        own = {k: p for k, p in own.items() if k in weights or not any(re.search(pattern, k) for pattern in kept)}
        missing = sorted(set(own) - set(weights))
        if missing:
            raise KeyError(f"{slot}.{FROM}: the source {source!r} has no weights for {', '.join(missing)}")
        wrong = [f"{k}: model {tuple(p.shape)}, source {tuple(weights[k].shape)}" for k, p in own.items()
                 if p.shape != weights[k].shape]
        if wrong:
            raise ValueError(f"{slot}.{FROM}: source {source!r} shapes differ: {'; '.join(wrong)}")
        copies += [(p, weights[k]) for k, p in own.items()]
    with torch.no_grad():
        for p, w in copies:
            p.copy_(w.to(p.dtype))


def attach_sources(model: Any, resolved: Mapping[str, Any], initialize: bool) -> None:
    """Model construction's hook: the model's config keeps each slot's "from" (and "revision"), and an
    initialised model on a real device receives the sources' weights."""
    named = origins(resolved)
    for slot in named:
        record = {k: resolved[slot][k] for k in (FROM, REVISION) if k in resolved[slot]}
        model._config[slot] = {**record, **model._config[slot]}
    if named and initialize and str(model.device) != "meta":
        load_sources(model)
