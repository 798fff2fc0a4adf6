"""A model made ready for training: built from its config (the towers its "from" slots name
pretrained first when the cache lacks them), made to speak a task's tokenizer and initialised as its
recipe says. `vlmzoo.build` is `build` here; `model_for_task` and `train_for_task` are a compare row."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.config.presets import load_config, merge_overrides, resolve_config, task_overrides
from vlmzoo.config.sources import HUB_ID, REVISION, is_tower, origins
from vlmzoo.data import Task, as_task
from vlmzoo.families.loading import local_folder
from vlmzoo.models.initialize import init_weights
from vlmzoo.models.model import Model
from vlmzoo.models.sources import load_sources
from vlmzoo.training.pretraining import ensure_towers
from vlmzoo.training.recipes import Recipe, recipe_for
from vlmzoo.training.train import TrainResult, train


def build(config: str | Mapping[str, Any], **overrides: Any) -> Model:
    """A model from a preset name ("llava-1.5-tiny"), a JSON path or a dict; slot overrides merge:
    build("llava-1.5-tiny", abstractor={"kind": "linear"}). A slot taken from an in-house tower
    ({"from": "clip-tiny-shapes"}) not pretrained yet is pretrained first (and cached); `vlmzoo.Model`
    itself never trains and refuses such a config with the command that pretrains the tower. A Hub id a slot
    takes ({"from": "owner/name"}) is downloaded into the huggingface_hub cache first (unless offline)."""
    options = {k: overrides.pop(k) for k in ("device", "dtype", "initialize") if k in overrides}
    if options.get("initialize", True) and str(options.get("device", "cpu")) != "meta":  # weights will be loaded
        raw = merge_overrides(load_config(config), overrides)
        ensure_towers(raw)
        fetch_sources(raw)
    return Model(config, **options, **overrides)


def fetch_sources(config: Mapping[str, Any]) -> None:
    """Downloads (into the huggingface_hub cache) every Hub id the config's "from" slots name, so resolving,
    which never downloads, finds it."""
    for slot, source in origins(config).items():
        if not is_tower(source) and HUB_ID.match(source) and not Path(source).exists():
            local_folder(source, config[slot].get(REVISION))


def model_for_task(config: str | Mapping[str, Any], task: str | Task, recipe: str | Recipe | None = None, seed: int = 0,
                   name: str | None = None, init_std: float | None = None) -> Model:
    """`config` built to speak the task's tokenizer, initialised as the recipe says (or N(0, init_std))
    from `seed`: the first half of a compare row; `train` is the second. task: a Task or a built-in task's name."""
    task = as_task(task)
    ensure_towers(config)
    resolved = resolve_config(config)
    std = init_std if init_std is not None else recipe_for(resolved, recipe).init_std
    torch.manual_seed(seed)
    model = Model(resolved, **({"name": name} if name else {}), **task_overrides(resolved, task.tokenizer))
    if std is not None:
        init_weights(model, std=std, seed=seed)
        load_sources(model)  # slots taken from elsewhere keep their sources' weights
    return model


def train_for_task(config: str | Mapping[str, Any], task: str | Task, budget: int | str, recipe: str | Recipe | None = None,
                   seed: int = 0, name: str | None = None, init_std: float | None = None,
                   **options: Any) -> tuple[Model, TrainResult]:
    """Builds, initialises and trains one model exactly as a `compare` row does; `options` override
    the recipe (lr=, batch_size=, trainable=, caption_fraction=) or go to `train` (progress=, desc=, lora=).
    With LoRA (lora= or the recipe's), the model returned has the adapters merged into its weights
    (result.extra["lora"] describes them); call `train` itself to keep the peft.PeftModel."""
    task = as_task(task)
    model = model_for_task(config, task, recipe, seed, name, init_std)
    result = train(model, task, budget, recipe=recipe, seed=seed, **options)
    if result.adapted is not None:
        model = result.adapted.merge_and_unload()
        result.adapted = None  # unloaded: the merged model is all there is
    return model, result
