"""Slots taken from towers vlmzoo pretrains itself: `"vision": {"from": "clip-tiny-shapes"}`.

A named tower is (preset, the slot it lends, task, budget, seed): vlmzoo.pretrain trains it on first
use and the user cache keeps it. In a config, a slot written as {"from": NAME, ...} becomes the
tower's slot config before the C++ core sees it; the fields beside "from" may only set what does not
change the weights (which layer's features are read, token selection, pooling, special token ids)
or repeat the tower's values: a different width or depth is an error naming the JSON path. The
resolved config keeps "from" in the slot, so the model (and a saved checkpoint) knows where its
weights came from; a model built with initialize=True then receives the tower's weights, checked
whole (every parameter of the slot, same shapes) before anything is copied."""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

FROM = "from"
# Fields a slot may set beside "from": they choose how the tower is read, not what its weights are.
READ_FIELDS = {
    "vision": {"feature_layers", "select", "pool"},
    "llm": {"bos_token_id", "eos_token_id", "pad_token_id"},
}


@dataclass(frozen=True)
class Tower:
    name: str
    preset: str  # the model pretrained (a dual encoder for images, a decoder for text)
    slot: str  # the slot of that model this tower lends
    task: str
    budget: int  # optimizer steps of vlmzoo.pretrain
    seed: int = 0
    description: str = ""
    task_sizes: tuple[tuple[str, int], ...] = ()  # overrides of vlmzoo.pretrain.PRETRAIN_TASK_SIZES

    def pretrain(self, progress: bool = False):
        from .pretraining import pretrain

        return pretrain(self.preset, self.task, self.budget, self.seed, task_sizes=dict(self.task_sizes),
                        progress=progress)


# Budgets: clip-tiny-shapes costs 5.7 TFLOPs (half of compare's default training budget; held-out
# recall@1/@5 text->image 2.0%/15.4% on 500 pairs, chance 0.2%/1%), lm-tiny-shapes 4.6 TFLOPs (held-out
# loss 0.66, perplexity 1.93). Their time on an idle 2-core machine is not measured yet: on the shared
# machine at load ~20 they took 25 and 24 minutes.
TOWERS: dict[str, Tower] = {t.name: t for t in [
    Tower("clip-tiny-shapes", "clip-tiny", "vision", "shapes", 150,
          description="the tiny CLIP's image tower, contrastive on shapes' captions"),
    Tower("siglip-tiny-shapes", "siglip-tiny", "vision", "shapes", 150,
          description="the tiny SigLIP's image tower, sigmoid loss on shapes' captions"),
    Tower("clip-tiny-digits", "clip-tiny", "vision", "digits", 150,
          description="the tiny CLIP's image tower, contrastive on digits' captions"),
    Tower("lm-tiny-shapes", "llava-1.5-tiny", "llm", "shapes", 300,
          description="the tiny LLaVA's Llama, next-token loss on shapes' text"),
    Tower("lm-tiny-digits", "llava-1.5-tiny", "llm", "digits", 300,
          description="the tiny LLaVA's Llama, next-token loss on digits' text"),
]}


def tower(name: Any, where: str = FROM) -> Tower:
    if not isinstance(name, str) or name not in TOWERS:
        raise ValueError(f"{where}: unknown tower {name!r}; towers: {', '.join(sorted(TOWERS))}")
    return TOWERS[name]


@functools.lru_cache(maxsize=None)
def _tower_slot_json(name: str) -> str:
    from .pretraining import pretraining_config

    t = TOWERS[name]
    return json.dumps(pretraining_config(t.preset, t.task)[t.slot])


def tower_slot_config(name: str) -> dict[str, Any]:
    """The lent slot's resolved config, as the tower was pretrained (no training needed to know it)."""
    tower(name)
    return json.loads(_tower_slot_json(name))


def _origins(raw: Mapping[str, Any]) -> dict[str, str]:
    from .model import SLOTS

    return {slot: raw[slot][FROM] for slot in SLOTS if isinstance(raw.get(slot), Mapping) and FROM in raw[slot]}


def expand_slot(slot: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """{"from": NAME, ...} -> the tower's slot config with the allowed fields of the user merged in."""
    name = fields[FROM]
    tower(name, f"{slot}.{FROM}")
    own = tower_slot_config(name)
    readable = READ_FIELDS.get(slot, set())
    expanded = {k: v for k, v in own.items() if k not in readable}  # the host family's defaults apply
    for key, value in fields.items():
        if key == FROM:
            continue
        if key in readable:
            expanded[key] = value
        elif key in own and own[key] != value:
            raise ValueError(f"{slot}.{key}: the tower {name!r} fixes {key}={own[key]!r}; got {value!r} "
                             f"(beside \"from\" a slot may set only {', '.join(sorted(readable)) or 'nothing'} "
                             "or repeat the tower's values)")
        else:
            expanded[key] = value
    return expanded


def resolve_with_towers(raw: dict[str, Any], resolve: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """`resolve` (the C++ config check) applied to `raw` with its "from" slots expanded; the resolved
    slots keep their "from" so the model built from them loads the tower's weights."""
    origins = _origins(raw)
    if not origins:
        return resolve(raw)
    expanded = copy.deepcopy(raw)
    for slot in origins:
        expanded[slot] = expand_slot(slot, raw[slot])
    resolved = resolve(expanded)
    for slot, name in origins.items():
        resolved[slot] = {FROM: name, **resolved[slot]}
    return resolved


def without_towers(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the C++ core reads it (no "from" keys)."""
    return {k: ({f: v for f, v in value.items() if f != FROM} if isinstance(value, Mapping) else value)
            for k, value in resolved.items()}


def tower_state(name: str) -> dict[str, torch.Tensor]:
    """The lent slot's weights, named as in the tower's model ("vision.layers.0..."): pretrained and
    cached on first use."""
    t = tower(name)
    prefix = t.slot + "."
    return {k: v for k, v in _pretrained(name).model.state_dict().items() if k.startswith(prefix)}


def _pretrained(name: str):
    from .cache import cache_root

    return _pretrained_in(name, str(cache_root()))


@functools.lru_cache(maxsize=8)
def _pretrained_in(name: str, cache_root: str):  # one read per tower and cache folder in a process
    return tower(name).pretrain()


def load_towers(model: Any) -> None:
    """Copies each "from" slot's tower weights into `model`: every parameter of the slot must have a
    tower weight of the same shape (checked for all slots before anything is copied). Tower weights the
    slot does not use (a pooling head the host does not build) are left out."""
    origins = _origins(model._config)
    if not origins:
        return
    copies = []
    for slot, name in origins.items():
        t = tower(name, f"{slot}.{FROM}")
        own = dict(model.named_parameters(slot))
        weights = {slot + k[len(t.slot):]: v for k, v in tower_state(name).items()}
        missing = sorted(set(own) - set(weights))
        if missing:
            raise KeyError(f"{slot}.{FROM}: the tower {name!r} has no weights for {', '.join(missing)}")
        wrong = [f"{k}: model {tuple(p.shape)}, tower {tuple(weights[k].shape)}" for k, p in own.items()
                 if p.shape != weights[k].shape]
        if wrong:
            raise ValueError(f"{slot}.{FROM}: tower {name!r} shapes differ: {'; '.join(wrong)}")
        copies += [(p, weights[k]) for k, p in own.items()]
    with torch.no_grad():
        for p, w in copies:
            p.copy_(w)


def pretraining_flops(config: Any) -> int:
    """FLOPs spent pretraining the towers the config's "from" slots take (0 without any): the cost
    `compare --count-pretraining` charges to the model, as each tower's cache entry records it
    (a tower not built yet is pretrained first, as the model would on first use)."""
    from .presets import load_config

    raw = config if isinstance(config, Mapping) else load_config(config)
    return sum(tower_flops(name) for name in _origins(raw).values())


def tower_flops(name: str) -> int:
    return _pretrained(name).pretraining_flops


def attach_towers(model: Any, resolved: Mapping[str, Any], initialize: bool) -> None:
    """Model construction's hook: the model's config keeps each slot's "from", and an initialised model
    on a real device receives the towers' weights."""
    origins = _origins(resolved)
    for slot, name in origins.items():
        model._config[slot] = {FROM: name, **model._config[slot]}
    if origins and initialize and model._module and str(model.device) != "meta":
        load_towers(model)
