"""Slots taken from towers vlmzoo pretrains itself: `"vision": {"from": "clip-tiny-shapes"}`.

A named tower is (preset, the slot it lends, task, budget, seed): data. The training layer pretrains it
(vlmzoo.pretrain, `vlmzoo pretrain --tower NAME`; vlmzoo.build, train and compare do it on first use) and
the user cache keeps it; a model built from a config naming a tower not pretrained yet is refused with
that command (vlmzoo.models.towers). Resolving a config needs no weights: the tower's slot config follows
from its preset and task alone. In a config, a slot written as {"from": NAME, ...} becomes the
tower's slot config before the C++ core sees it; the fields beside "from" may only set what does not
change the weights (which layer's features are read, token selection, pooling, special token ids)
or repeat the tower's values: a different width or depth is an error naming the JSON path. The
resolved config keeps "from" in the slot, so the model (and a saved checkpoint) knows where its
weights came from; a model built with initialize=True then receives the tower's weights, checked
whole (every parameter of the slot, same shapes) before anything is copied."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Mapping

from vlmzoo.config.budget import parse_budget
from vlmzoo.config.library import assembly_of, check_config, load_config, merge_overrides, task_overrides
from vlmzoo.data import make_task
from vlmzoo.data.tasks import TASKS
from vlmzoo.version import __version__

FROM = "from"
SLOTS = ("vision", "abstractor", "fusion", "llm", "head")
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

    def spec(self) -> dict[str, Any]:
        """What the tower's cache entry is keyed by (vlmzoo.pretrain's spec of its arguments)."""
        return pretrain_spec(self.preset, self.task, self.budget, self.seed, task_sizes=dict(self.task_sizes))

    @property
    def command(self) -> str:
        """The command that pretrains it."""
        return f"vlmzoo pretrain --tower {self.name}"


# vlmzoo.pretrain's and `vlmzoo pretrain`'s budget when none is given: the dual-encoder towers' below.
DEFAULT_PRETRAIN_BUDGET = 150

# Budgets: clip-tiny-shapes costs 5.7 TFLOPs (half of compare's default training budget; held-out
# recall@1/@5 text->image 2.0%/15.4% on 500 pairs, chance 0.2%/1%), lm-tiny-shapes 4.6 TFLOPs (held-out
# loss 0.66, perplexity 1.93). Their time on an idle 2-core machine is not measured yet: on the shared
# machine at load ~20 they took 25 and 24 minutes.
TOWERS: dict[str, Tower] = {t.name: t for t in [
    Tower("clip-tiny-shapes", "clip-tiny", "vision", "shapes", 150,
          description="the tiny CLIP's image tower, contrastive on shapes' captions"),
    # 4x the budget (22.9 TFLOPs): held-out recall@1 image->text 24%, text->image 18% (clip-tiny-shapes: 5%, 3%).
    Tower("clip-tiny-shapes-long", "clip-tiny", "vision", "shapes", 600,
          description="the tiny CLIP's image tower, contrastive on shapes' captions, 4x longer"),
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


# ---- how a tower is pretrained: data the cache key hashes (vlmzoo.training.pretraining runs it)
# Bump when the pretraining recipe changes: older cache entries then stop matching.
PRETRAIN_VERSION = 1
# One size for every tower: enough captions for a few hundred contrastive steps without repeating much.
PRETRAIN_TASK_SIZES = {"n_train": 6000, "n_val": 0, "n_test": 500}


@dataclass(frozen=True)
class PretrainRecipe:
    batch_size: int
    lr: float
    weight_decay: float
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    init_std: float = 0.02
    betas: tuple[float, float] = (0.9, 0.95)


# Contrastive: large batches give each caption more negatives (CLIP's recipe: AdamW betas 0.9/0.98, wd 0.1).
PRETRAIN_RECIPES = {
    "contrastive": PretrainRecipe(batch_size=128, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98)),
    "language": PretrainRecipe(batch_size=64, lr=1e-3, weight_decay=0.01),
}


def objective_of(config: Mapping[str, Any]) -> str:
    return "contrastive" if assembly_of(config) == "dual_encoder" else "language"


def tokenizer_of(task_name: str):
    """The task's tokenizer without generating its data (it depends only on the task's vocabulary)."""
    return make_task(task_name, n_train=0, n_val=0, n_test=0).tokenizer


def pretraining_config(config: Any, task_name: str) -> dict[str, Any]:
    """`config` resolved to speak the task's tokenizer (vocab and special ids; <image> for a decoder)."""
    resolved = check_config(load_config(config))
    overrides = task_overrides(resolved, tokenizer_of(task_name))
    if objective_of(resolved) == "contrastive":
        overrides.pop("fusion")
    return check_config(merge_overrides(resolved, overrides))


def pretrain_spec(config: Any, task: str = "shapes", budget: int | str = DEFAULT_PRETRAIN_BUDGET, seed: int = 0,
                  task_sizes: Mapping[str, int] | None = None, image_size: int = 64) -> dict[str, Any]:
    """Everything that decides a pretraining's result, as the cache key hashes it."""
    if task not in TASKS:
        raise ValueError(f"task: unknown task {task!r}; tasks are {', '.join(sorted(TASKS))}")
    resolved = pretraining_config(config, task)
    objective = objective_of(resolved)
    return {
        "objective": objective,
        "config": resolved,
        "task": {"name": task, "seed": seed, "image_size": image_size, **{**PRETRAIN_TASK_SIZES, **(task_sizes or {})}},
        "seed": seed,
        "steps": parse_budget(budget),
        "recipe": PRETRAIN_RECIPES[objective].__dict__,
        "pretrain_version": PRETRAIN_VERSION,
        "vlmzoo_version": __version__,
    }


@functools.lru_cache(maxsize=None)
def _tower_slot_json(name: str) -> str:
    t = TOWERS[name]
    return json.dumps(pretraining_config(t.preset, t.task)[t.slot])


def tower_slot_config(name: str) -> dict[str, Any]:
    """The lent slot's resolved config, as the tower was pretrained (no training needed to know it)."""
    tower(name)
    return json.loads(_tower_slot_json(name))
