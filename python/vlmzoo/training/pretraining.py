"""`vlmzoo.pretrain` (this module: vlmzoo.pretraining): towers vlmzoo trains for itself, since no pretrained weights can be downloaded here.

- A dual encoder (CLIP, SigLIP) learns on a built-in task's image/caption pairs with its own loss
  (symmetric InfoNCE, pairwise sigmoid); its metric is image-text retrieval recall@1/5 on held-out pairs.
- A decoder family's language model (the tiny LLaVA's Llama) learns the task's text alone (captions,
  questions and their answers, no image); its metric is the held-out next-token loss and perplexity.

Results go to the user cache (vlmzoo.cache), keyed by the resolved config, the task and its data
parameters, the seed, the budget and PRETRAIN_VERSION, so a second call (or a "from" slot) reuses them."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from tqdm.auto import tqdm

from vlmzoo.config.towers import (  # noqa: F401  (pretraining_config, pretrain_spec: part of this module's face)
    DEFAULT_PRETRAIN_BUDGET, PRETRAIN_RECIPES, PRETRAIN_TASK_SIZES, PRETRAIN_VERSION, PretrainRecipe, pretrain_spec,
    pretraining_config, tower)
from vlmzoo.config.presets import load_config
from vlmzoo.config.sources import is_tower, origins
from vlmzoo.data import NORMALIZATIONS, Example, Task, images_to_tensor, make_task
from vlmzoo.data.tasks import CAPTION_QUESTION, TASKS
from vlmzoo.models.info import forward_flops
from vlmzoo.models.initialize import init_weights
from vlmzoo.models.model import build
from vlmzoo.models.towers import tower_entry
from vlmzoo.storage.cache import cached
from vlmzoo.training.train import FINAL_LOSS, _param_groups, lr_at, mean_final_loss

RECIPES = PRETRAIN_RECIPES  # the pretraining recipes (data: vlmzoo.config.towers)


@dataclass
class PretrainResult:
    model: Any  # the pretrained vlmzoo.Model or DualEncoderModel
    objective: str  # "contrastive" or "language"
    metrics: dict[str, float]
    steps: int
    pretraining_flops: int
    from_cache: bool
    cache_folder: Path | None
    spec: dict[str, Any]  # what the cache key hashes


# ---- data
def held_out_captions(task: Task) -> list[Example]:
    """Caption examples of the task's test images: pairs the contrastive model never trained on."""
    caption = TASKS[task.name].caption
    return [Example(e.image, CAPTION_QUESTION, caption(e.source), "caption", source=e.source) for e in task.test]


def text_batch(texts: Sequence[str], tokenizer, left_pad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """<bos> text <eos> rows, padded: input_ids [B, T], attention_mask [B, T]. Left padding puts
    every row's <eos> last (SigLIP pools the last token); CLIP pools at <eos> and is causal, so
    its rows are right-padded (a left-padded row's padding would attend to nothing)."""
    rows = [[tokenizer.bos_id, *tokenizer.encode(t), tokenizer.eos_id] for t in texts]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left_pad else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def language_rows(task: Task, split: str) -> list[str]:
    """The task's text: every question with its answer, and (train) every caption after its instruction."""
    rows = [f"{e.question} {e.answer}" for e in task.examples(split)]
    if split == "train":
        rows += [f"{e.question} {e.answer}" for e in task.captions]
    return rows


# ---- metrics
def recall_at_k(similarity: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of queries whose k best-scored items include a positive. similarity [queries, items];
    positives [queries, items] bool (more than one when items repeat, e.g. two images with one caption)."""
    if similarity.shape != positives.shape:
        raise ValueError(f"recall_at_k: similarity {tuple(similarity.shape)} and positives {tuple(positives.shape)} differ")
    result = {}
    for k in ks:
        top = similarity.topk(min(k, similarity.size(1)), dim=1).indices  # [queries, k]
        result[k] = positives.gather(1, top).any(dim=1).float().mean().item()
    return result


@torch.no_grad()
def retrieval_metrics(model, pairs: Sequence[Example], tokenizer, left_pad: bool, image_size: int,
                      mean: Sequence[float], std: Sequence[float]) -> dict[str, float]:
    """Recall@1/5 both ways on held-out (image, caption) pairs; images whose captions are equal count
    as positives of each other (a caption cannot tell them apart)."""
    ids, mask = text_batch([e.answer for e in pairs], tokenizer, left_pad)
    pixels = images_to_tensor([e.image for e in pairs], image_size, mean, std)
    model.eval()
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    captions = [e.answer for e in pairs]
    positives = torch.tensor([[a == b for b in captions] for a in captions])
    t2i = recall_at_k(out.logits_per_text, positives)
    i2t = recall_at_k(out.logits_per_image, positives.t())
    return {"text_to_image_recall@1": t2i[1], "text_to_image_recall@5": t2i[5],
            "image_to_text_recall@1": i2t[1], "image_to_text_recall@5": i2t[5], "held_out_pairs": len(pairs)}


@torch.no_grad()
def language_metrics(model, rows: Sequence[str], tokenizer, batch_size: int = 128) -> dict[str, float]:
    """Held-out next-token loss and perplexity over every token after <bos>."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        ids, mask = text_batch(rows[start:start + batch_size], tokenizer, left_pad=True)
        labels = ids.masked_fill(mask == 0, -100)
        logits = model(input_ids=ids, attention_mask=mask).logits
        n = int((labels[:, 1:] != -100).sum())
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
        total, count = total + loss.item(), count + n
    mean_loss = total / max(1, count)
    return {"held_out_loss": mean_loss, "held_out_perplexity": math.exp(mean_loss), "held_out_rows": len(rows)}


# ---- FLOPs
def mean_tokens(texts: Sequence[str], tokenizer) -> float:
    return sum(2 + len(tokenizer.encode(t)) for t in texts) / max(1, len(texts))  # <bos> and <eos>


def flops_per_example(config: Mapping[str, Any], objective: str, text_tokens: float) -> int:
    """Training FLOPs of one example: 3x the forward (forward, weight and input gradients), the
    image tower included for a dual encoder, the language model alone for text."""
    forward = forward_flops(dict(config), text_tokens=round(text_tokens), images=1 if objective == "contrastive" else 0)
    return 3 * (forward["total"] if objective == "contrastive" else forward["llm"])


# ---- the training loops
def _train_loop(model, steps: int, recipe: PretrainRecipe, seed: int, batch_of, progress: bool, desc: str) -> list[float]:
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=recipe.betas)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    warmup = max(1, round(recipe.warmup * steps))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, recipe.lr, warmup, recipe.min_lr_ratio)
        loss = model(**batch_of(generator)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _pretrain_contrastive(model, task: Task, steps: int, recipe: PretrainRecipe, seed: int, progress: bool):
    tokenizer = task.tokenizer
    vision = model.config["vision"]
    image_size = vision.get("image_size", task.image_size)
    mean, std = NORMALIZATIONS.get(vision.get("style", "clip"), NORMALIZATIONS["clip"])
    left_pad = model.config["llm"]["kind"] != "clip_text"  # SigLIP pools the last token
    pairs = task.captions
    pixels = images_to_tensor([e.image for e in pairs], image_size, mean, std)  # [N, 3, H, W], once

    def contrastive_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randperm(len(pairs), generator=generator)[:recipe.batch_size]
        ids, mask = text_batch([pairs[i].answer for i in index.tolist()], tokenizer, left_pad)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels[index], "return_loss": True}

    losses = _train_loop(model, steps, recipe, seed, contrastive_batch, progress, f"pretrain {model.name}")
    metrics = retrieval_metrics(model, held_out_captions(task), tokenizer, left_pad, image_size, mean, std)
    per_example = flops_per_example(model.config, "contrastive", mean_tokens([e.answer for e in pairs], tokenizer))
    return losses, metrics, per_example


def _pretrain_language(model, task: Task, steps: int, recipe: PretrainRecipe, seed: int, progress: bool):
    tokenizer = task.tokenizer
    rows = language_rows(task, "train")

    def language_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(rows), (recipe.batch_size,), generator=generator)
        ids, mask = text_batch([rows[i] for i in index.tolist()], tokenizer, left_pad=True)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    for slot in ("vision", "abstractor", "fusion", "head"):
        model.requires_grad_(False, slot)  # text alone: only the language model learns
    losses = _train_loop(model, steps, recipe, seed, language_batch, progress, f"pretrain {model.name} (text)")
    metrics = language_metrics(model, language_rows(task, "test"), tokenizer)
    per_example = flops_per_example(model.config, "language", mean_tokens(rows, tokenizer))
    return losses, metrics, per_example


def pretrain(config: str | Mapping[str, Any] = "clip-tiny", task: str = "shapes",
             budget: int | str = DEFAULT_PRETRAIN_BUDGET,
             seed: int = 0, *, task_sizes: Mapping[str, int] | None = None, image_size: int = 64,
             cache: bool = True, progress: bool = True) -> PretrainResult:
    """Pretrains `config` on the built-in `task` for `budget` optimizer steps, or reads it from the cache.

    A dual-encoder config (clip-tiny, siglip-tiny) trains contrastively on the task's image/caption
    pairs (metrics: held-out retrieval recall@1/5); any other family's language model trains on
    the task's text (metrics: held-out loss and perplexity). cache=False trains without reading or
    writing the cache. Returns the model, metrics, steps and pretraining FLOPs."""
    spec = pretrain_spec(config, task, budget, seed, task_sizes, image_size)
    objective, steps, recipe = spec["objective"], spec["steps"], PRETRAIN_RECIPES[spec["objective"]]

    def run() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        started = time.perf_counter()
        sizes = {k: v for k, v in spec["task"].items() if k.startswith("n_")}
        data = make_task(task, seed=seed, image_size=image_size, **sizes)
        torch.manual_seed(seed)
        model = init_weights(build(spec["config"]), std=recipe.init_std, seed=seed)
        train = _pretrain_contrastive if objective == "contrastive" else _pretrain_language
        losses, metrics, per_example = train(model, data, steps, recipe, seed, progress)
        record = {"objective": objective, "metrics": metrics, "steps": steps, "batch_size": recipe.batch_size,
                  "flops_per_example": per_example, "pretraining_flops": per_example * recipe.batch_size * steps,
                  FINAL_LOSS: mean_final_loss(losses), "wall_time_s": time.perf_counter() - started}
        return record, dict(model.state_dict())

    if cache:
        entry = cached("pretrain", spec, run)
        record, state, hit, folder = entry.record, entry.state_dict, entry.hit, entry.folder
    else:
        (record, state), hit, folder = run(), False, None
    model = build(spec["config"], initialize=False)
    model.load_state_dict(state)
    return PretrainResult(model=model.eval(), objective=objective, metrics=record["metrics"], steps=steps,
                          pretraining_flops=int(record["pretraining_flops"]), from_cache=hit, cache_folder=folder,
                          spec=spec)


# ---- in-house towers ({"from": NAME} slots): pretrained here on first use
def pretrain_tower(name: str, progress: bool = False) -> PretrainResult:
    """The named tower (vlmzoo.config.towers.TOWERS) pretrained, or read from the cache."""
    t = tower(name)
    return pretrain(t.preset, t.task, t.budget, t.seed, task_sizes=dict(t.task_sizes), progress=progress)


def ensure_towers(config: Any, progress: bool = False) -> None:
    """Pretrains every tower the config's "from" slots name that the cache does not hold yet."""
    raw = config if isinstance(config, Mapping) else load_config(config)
    for name in filter(is_tower, origins(raw).values()):
        if tower_entry(name) is None:
            pretrain_tower(name, progress=progress)


def tower_flops(name: str) -> int:
    """FLOPs its pretraining cost, as the tower's cache entry records them (pretrained first when absent)."""
    entry = tower_entry(name)
    return pretrain_tower(name).pretraining_flops if entry is None else int(entry.record["pretraining_flops"])


def pretraining_flops(config: Any) -> int:
    """FLOPs spent pretraining the towers the config's "from" slots take (0 without any): the cost
    `compare --count-pretraining` charges to the model."""
    raw = config if isinstance(config, Mapping) else load_config(config)
    return sum(tower_flops(name) for name in filter(is_tower, origins(raw).values()))
