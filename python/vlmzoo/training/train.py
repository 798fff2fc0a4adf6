"""Training a vlmzoo model on a built-in task: AdamW, warmup + cosine, clipping, freezing presets,
a budget in steps or training FLOPs, checkpoints that resume."""
from __future__ import annotations

import itertools
import json
import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vlmzoo.config.budget import parse_budget
from vlmzoo.config.presets import task_overrides  # noqa: F401  (part of this module's face)
from vlmzoo.data import NORMALIZATIONS, Example, Task, as_task, collate
from vlmzoo.data.tokenizer import WordTokenizer
from vlmzoo.models.checkpoint import VLMZOO_CONFIG, read_safetensors_folder, save_model
from vlmzoo.models.info import forward_flops, visual_tokens_per_image
from vlmzoo.models.model import SLOTS, Model
from vlmzoo.models.validate import load_into
from vlmzoo.storage import atomic  # called through the module: a test stands in for one of its writers
from vlmzoo.training.precision import autocast, resolve_precision
from vlmzoo.training.lora import adapt, adapter_parameters, describe, is_adapted, lora_config, set_trainable
from vlmzoo.training.recipes import FAMILY_TRAINABLE, Recipe, recipe_for, settle, stage_plan  # noqa: F401  (FAMILY_TRAINABLE: re-exported)

# Named choices for `trainable=`; a from-scratch model needs more than its family's stage-1 preset to learn.
TRAINABLE_PRESETS: dict[str, tuple[str, ...]] = {"all": SLOTS, "projector+llm": ("abstractor", "llm")}
TRAINER_STATE = "trainer_state.pt"
TOKENIZER_FILE = "vlmzoo_tokenizer.json"


@dataclass
class TrainResult:
    steps: int  # optimizer steps done, counting those before a resume
    losses: list[float]  # training loss of every step
    learning_rates: list[float]
    trainable_slots: tuple[str, ...]
    batch_size: int
    flops_per_example: int  # training FLOPs of one example (see train_flops_per_example)
    train_flops: int  # FLOPs of all `steps` steps
    wall_time_s: float  # time spent in this call's steps (not counting setup)
    examples_per_s: float  # throughput of this call's steps
    tokens_per_s: float
    checkpoint: str | None = None  # the last checkpoint written
    extra: dict[str, Any] = field(default_factory=dict)
    # With lora=: the peft.PeftModel around the trained model (adapted.merge_and_unload() merges the adapters
    # into a plain vlmzoo.Model; adapted.save_pretrained(folder) saves them alone). None otherwise.
    adapted: Any = None


FINAL_LOSS_STEPS = 10
FINAL_LOSS = f"mean_loss_last_{FINAL_LOSS_STEPS}_steps"  # a result column: the mean, not the last step's loss


def mean_final_loss(losses: Sequence[float], steps: int = FINAL_LOSS_STEPS) -> float:
    """The mean training loss of the last `steps` steps (fewer in a shorter run): steadier than the last loss."""
    return sum(losses[-steps:]) / len(losses[-steps:]) if losses else float("nan")


def trainable_slots(model: Model, trainable: str | Sequence[str] = "family") -> tuple[str, ...]:
    """Slots to train: "family" (the family's usual preset), "all", "projector+llm", or slot names."""
    if isinstance(trainable, str):
        if trainable == "family":
            family = model.config["family"]
            if family not in FAMILY_TRAINABLE:
                raise ValueError(f"no freezing preset for family {family!r}; pass trainable= slot names")
            return FAMILY_TRAINABLE[family]
        if trainable in TRAINABLE_PRESETS:
            return TRAINABLE_PRESETS[trainable]
        trainable = [trainable]
    slots = tuple(trainable)
    unknown = [s for s in slots if s not in SLOTS]
    if unknown or not slots:
        raise ValueError(
            f"trainable={trainable!r}: expected 'family', {', '.join(map(repr, TRAINABLE_PRESETS))} or slots from {SLOTS}"
        )
    return slots


def check_model_fits_task(model: Model, tokenizer: WordTokenizer) -> None:
    """The model must read and write every token id of the task's tokenizer."""
    llm = model.config["llm"]
    if llm["vocab"] < len(tokenizer):
        raise ValueError(f"llm.vocab {llm['vocab']} is smaller than the task's tokenizer ({len(tokenizer)} tokens)")
    if model.visual_tokens_per_image and model.image_token_id != tokenizer.image_id:
        raise ValueError(
            f"fusion.image_token_id {model.image_token_id} differs from the tokenizer's <image> id {tokenizer.image_id}"
        )


def normalization(config: dict[str, Any]) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) the config's vision tower expects."""
    return NORMALIZATIONS.get(config["vision"].get("style", "clip"), NORMALIZATIONS["clip"])


def mean_text_tokens(task: str | Task, split: str = "train") -> float:
    """Average non-image tokens of a training row: <bos>, question, answer, <eos>."""
    task = as_task(task)
    examples = task.examples(split)
    tok = task.tokenizer
    return sum(2 + len(tok.encode(e.question)) + len(tok.encode(e.answer)) for e in examples) / max(1, len(examples))


def train_flops_per_example(config: dict[str, Any], task: str | Task, caption_fraction: float = 0.0,
                            trainable: Sequence[str] = SLOTS, lora_parameters: int = 0) -> int:
    """FLOPs of one training example: each slot's forward, plus one forward-worth for its weight
    gradients when it trains, plus one for its input gradients when a slot upstream trains (about 3x
    when all train; pixels need no gradient, and a frozen vision tower costs only its forward).
    lora_parameters > 0: the LM trains through LoRA adapters of that many parameters instead (see
    flops_with_backward), each costing 2 FLOPs per token of the LM's sequence in the forward."""
    task = as_task(task)
    text = mean_text_tokens(task, "train")
    if caption_fraction > 0:
        text = (1 - caption_fraction) * text + caption_fraction * mean_text_tokens(task, "captions")
    adapters = 2 * lora_parameters * lm_sequence_tokens(config, round(text)) if lora_parameters else 0
    return flops_with_backward(forward_flops(config, text_tokens=round(text), images=1), trainable, adapters)


def lm_sequence_tokens(config: Mapping[str, Any], text_tokens: int, images: int = 1) -> int:
    """Tokens the LM's layers run over: the text, and the visual tokens when the fusion splices them into the
    sequence (cross-attention keeps them out)."""
    spliced = config.get("fusion", {}).get("kind") != "cross_attention"
    return text_tokens + (images * visual_tokens_per_image(dict(config)) if spliced else 0)


def flops_with_backward(forward: Mapping[str, int], trainable: Sequence[str], adapter_forward: int = 0) -> int:
    """Training FLOPs from each slot's forward FLOPs (forward_flops): a slot costs its forward, one more for
    its weight gradients when it trains, one more for its input gradients when a slot upstream trains.
    adapter_forward > 0 (LoRA, forward FLOPs of the adapters): the LM's weights are frozen, so "llm" in
    `trainable` buys no weight gradients for them; the LM pays its forward and its input gradients (the
    adapters inside need them), the adapters their forward, weight and input gradients."""
    total = 0
    for i, slot in enumerate(SLOTS):
        upstream_trains = any(s in trainable for s in SLOTS[:i])
        trains = slot in trainable
        if slot == "llm" and adapter_forward:
            total += forward.get(slot, 0) * (1 + (trains or upstream_trains))
            total += adapter_forward * (1 + trains + (trains or upstream_trains))
        else:
            total += forward.get(slot, 0) * (1 + trains + upstream_trains)
    return total


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to lr, then cosine decay to lr * min_lr_ratio at total_steps (step counts from 0)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _param_groups(model: Model, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only: decaying norm gains and biases pulls them towards 0, which hurts.
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(param_groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.95) with torch's fused kernel: one pass over each parameter's state instead
    of about ten (bench/train_vs_transformers.py measures it); the per-parameter loop where fused is unsupported."""
    try:
        return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, ValueError):  # e.g. a dtype or device the fused kernel does not take
        return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.95))


def _epoch_examples(task: Task, epoch: int, seed: int, caption_fraction: float) -> list[Example]:
    """One epoch's shuffled examples: every train question plus, with caption_fraction f, enough
    caption examples to make up a share f of the epoch."""
    rng = np.random.default_rng([seed, epoch])
    examples = list(task.train)
    if caption_fraction >= 1:  # captions alone (an alignment stage)
        examples = list(task.captions)
    elif caption_fraction > 0:
        n_captions = min(len(task.captions), round(len(examples) * caption_fraction / (1 - caption_fraction)))
        examples += [task.captions[i] for i in rng.choice(len(task.captions), n_captions, replace=False)]
    return [examples[i] for i in rng.permutation(len(examples))]


def _batches(task: Task, model: Model, batch_size: int, seed: int, start_step: int,
             caption_fraction: float = 0.0) -> Iterator[dict]:
    """Endless shuffled epochs, positioned at `start_step` so a resumed run sees the data it would have seen."""
    mean, std = normalization(model.config)
    image_size = model.config["vision"].get("image_size", task.image_size)
    step = 0
    for epoch in itertools.count():
        examples = _epoch_examples(task, epoch, seed, caption_fraction)
        full_batches = max(1, len(examples) // batch_size)  # drop the ragged tail: every step sees batch_size
        if step + full_batches <= start_step:  # skip whole epochs without collating them
            step += full_batches
            continue
        for b in range(full_batches):
            if step >= start_step:
                chunk = examples[b * batch_size : (b + 1) * batch_size]
                yield collate(chunk, task.tokenizer, visual_tokens_per_image=model.visual_tokens_per_image,
                              image_size=image_size, mean=mean, std=std)
            step += 1


def _check_plain(value: Any, where: str) -> None:
    """Trainer state holds only what torch.load(weights_only=True) reads back: tensors and primitives."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; trainer state keys are str or int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (bool, int, float, str, torch.Tensor))):
        raise TypeError(f"{where}: a {type(value).__name__}; trainer state holds tensors and primitives only")


def save_checkpoint(folder: str | Path, model: Model, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    tokenizer: WordTokenizer | None = None) -> Path:
    """Model (safetensors + config, loadable by vlmzoo.from_pretrained), tokenizer, and optimizer/step state.

    The folder is built under a hidden name and renamed into place whole: a run killed while saving
    leaves no half-written step folder, and the earlier ones untouched."""

    trainer_state = {**state, "optimizer": optimizer.state_dict()}
    _check_plain(trainer_state, TRAINER_STATE)
    folder = Path(folder)
    with atomic.staged_folder(folder) as staging:
        save_model(model, staging)
        if tokenizer is not None:
            atomic.atomic_write_text(staging / TOKENIZER_FILE, json.dumps(tokenizer.to_dict()))
        atomic.atomic_torch_save(trainer_state, staging / TRAINER_STATE)
    return folder


def load_trainer_state(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.pt, read without unpickling anything but tensors and primitives."""
    path = Path(folder) / TRAINER_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused, it holds objects that only full unpickling could build: {e}") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable trainer state ({e})") from None
    needed = ("step", "losses", "learning_rates", "optimizer")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise ValueError(f"{path}: expected a dict with {', '.join(needed)}")
    return state


def _step_of(folder: Path) -> int:
    digits = folder.name[len("step-"):]
    return int(digits) if digits.isdigit() else -1


def latest_checkpoint(path: str | Path) -> Path:
    """`path` itself when it is a checkpoint, else its step-* checkpoint with the highest step."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        return path
    complete = [f for f in path.glob("step-*") if (f / TRAINER_STATE).is_file() and (f / VLMZOO_CONFIG).is_file()]
    if not complete:
        raise FileNotFoundError(f"resume_from={str(path)!r}: no {TRAINER_STATE} there or in its step-* folders")
    return max(complete, key=_step_of)


def train(
    model: Model,
    task: str | Task,
    budget: int | str = 300,
    *,
    recipe: str | Recipe | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup: float | None = None,
    min_lr_ratio: float | None = None,
    max_grad_norm: float | None = None,
    caption_fraction: float | None = None,
    trainable: str | Sequence[str] | None = None,
    precision: str = "float32",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str | None = None,
    on_step: Callable[[Model, int, int], None] | None = None,
    lora: Any = None,
) -> TrainResult:
    """Trains `model` in place on `task`'s train split and returns the loss curve and throughput.

    task: a vlmzoo.data.Task or a built-in task's name ("shapes", "digits": make_task's default data).

    recipe: the family's recipe in vlmzoo.recipes ("scratch", the default, is what `compare` uses
      for the random tiny models of the built-in tasks; "stage1" trains LLaVA's projector alone, for
      pretrained towers) or a Recipe. batch_size, lr, weight_decay, warmup (a fraction of the steps),
      min_lr_ratio, max_grad_norm, caption_fraction and trainable override the recipe's values
      (a budget of few steps takes the recipe's short-run options, e.g. "scratch-short").
      `train` never re-initialises: the recipe's init_std is applied by vlmzoo.recipes.model_for_task.
    budget: optimizer steps (300, "300steps") or training FLOPs ("2e12flops"; one example costs
      about 3x its forward FLOPs at the task's mean text length, less for frozen slots). trainable:
      "family" (the family's usual stage-1 freezing), "all", "projector+llm", or slot names.
      caption_fraction: share of each epoch made of the task's template captions (LLaVA-style
      alignment data).
    precision: "float32", "bf16" (bfloat16 matrix products and attention under CPU autocast, float32 master
      weights and optimizer state; vlmzoo.training.precision) or "auto" (bf16 where the CPU has AMX-BF16 or
      AVX512-BF16). The model is evaluated in float32 either way.
      Checkpoints go to checkpoint_dir/step-NNNNNN every `checkpoint_every` steps and at the end;
      resume_from (a checkpoint or such a dir) restores weights, optimizer and step, then trains
      up to the budget (the schedule follows the budget, so keep it to continue the same run).
      resume=True: continue from checkpoint_dir's latest complete checkpoint when it has one, else
      start fresh, so the same call both starts a run and continues it after a kill.
    on_step: called as on_step(model, steps done, total steps) after every optimizer step (e.g. to evaluate
      periodically: `compare`'s learning curves); its time is kept out of the throughput.
    lora: a peft.LoraConfig or a dict of its fields (r=8, lora_alpha=16, lora_dropout=0.05 and every Linear
      of the LM's layers by default; vlmzoo.training.lora), or the recipe's `lora`: the LM trains through
      LoRA adapters, its own weights frozen, while the recipe's other slots train fully. The budget counts
      what such a step costs (the frozen LM's forward and input gradients, the adapters' own FLOPs). `model`
      is adapted in place and result.adapted is the peft.PeftModel: `result.adapted.merge_and_unload()` gives
      a plain vlmzoo.Model with merged weights, `result.adapted.save_pretrained(folder)` the adapters alone.
    """
    task = as_task(task)
    check_model_fits_task(model, task.tokenizer)
    precision = resolve_precision(precision)
    lora = lora if lora is not None else recipe_for(model.config, recipe).lora
    adapters, adapter_params, adapted = None, 0, None
    if lora is not None:
        if checkpoint_dir is not None or resume_from is not None or resume:
            raise ValueError("lora= runs write no checkpoints yet: drop checkpoint_dir/resume_from/resume and save "
                             "the adapters with result.adapted.save_pretrained(folder)")
        if is_adapted(model):  # a later stage of the same run: its adapters are in place
            adapters = lora
            adapter_params = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
        else:
            adapters = lora_config(model, lora)
            adapter_params = adapter_parameters(model, adapters)
    explicit = dict(batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup, min_lr_ratio=min_lr_ratio,
                    max_grad_norm=max_grad_norm, caption_fraction=caption_fraction, trainable=trainable)

    def steps_of(candidate: Recipe) -> int:
        if not 0 <= candidate.caption_fraction <= 1:
            raise ValueError(f"caption_fraction must be in [0, 1] (1: captions alone), got {candidate.caption_fraction}")
        per_example = train_flops_per_example(model.config, task, candidate.caption_fraction,
                                              trainable_slots(model, candidate.trainable), adapter_params)
        return parse_budget(budget, flops_per_step=per_example * candidate.batch_size)

    chosen, total_steps = settle(recipe_for(model.config, recipe), explicit, steps_of)
    if chosen.stages and resume_from is None:  # e.g. LLaVA's align then instruct (vlmzoo.recipes)
        if adapters is not None and not is_adapted(model):
            adapted = adapt(model, adapters)
        result = train_in_stages(model, task, chosen, total_steps, explicit, seed=seed, progress=progress, desc=desc,
                                 on_step=on_step, lora=adapters, precision=precision)
        if adapted is not None:
            result.adapted = adapted
            result.extra["lora"] = describe(adapters, adapter_params)
        return result
    batch_size, lr, weight_decay, warmup = chosen.batch_size, chosen.lr, chosen.weight_decay, chosen.warmup
    min_lr_ratio, max_grad_norm, caption_fraction = chosen.min_lr_ratio, chosen.max_grad_norm, chosen.caption_fraction
    slots = trainable_slots(model, chosen.trainable)
    flops_per_example = train_flops_per_example(model.config, task, caption_fraction, slots, adapter_params)
    if adapters is None:
        for slot in SLOTS:
            model.requires_grad_(slot in slots, slot)
    else:
        if not is_adapted(model):
            if "llm" not in slots:
                raise ValueError(f"lora= adapts the LM, but trainable {slots} leaves 'llm' out: the adapters would not train")
            adapted = adapt(model, adapters)
        set_trainable(model, slots)

    torch.manual_seed(seed)
    optimizer = make_optimizer(_param_groups(model, weight_decay), lr)
    warmup_steps = max(1, round(warmup * total_steps))
    losses: list[float] = []
    lrs: list[float] = []
    start_step = 0
    if resume:
        if resume_from is not None or checkpoint_dir is None:
            raise ValueError("resume=True continues from checkpoint_dir: give checkpoint_dir, and not resume_from")
        if any((f / TRAINER_STATE).is_file() for f in Path(checkpoint_dir).glob("step-*")):
            resume_from = checkpoint_dir
    if resume_from is not None:
        folder = latest_checkpoint(resume_from)
        state = load_trainer_state(folder)
        load_into(dict(model.named_parameters()), read_safetensors_folder(folder))
        optimizer.load_state_dict(state["optimizer"])
        start_step, losses, lrs = state["step"], list(state["losses"]), list(state["learning_rates"])

    def checkpoint(step: int) -> str:
        state = {"step": step, "losses": losses, "learning_rates": lrs, "total_steps": total_steps, "seed": seed}
        return str(save_checkpoint(Path(checkpoint_dir) / f"step-{step:06d}", model, optimizer, state, task.tokenizer))

    model.train()
    bar = tqdm(total=total_steps, initial=start_step, desc=desc or model.name, disable=not progress,
               dynamic_ncols=True, leave=False)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    tokens = examples = 0
    last_checkpoint = None
    checkpoint_time = 0.0  # checkpoints and on_step, kept out of the throughput
    started = time.perf_counter()
    batches = _batches(task, model, batch_size, seed, start_step, caption_fraction)
    for step in range(start_step, total_steps):
        batch = next(batches)
        rate = lr_at(step, total_steps, lr, warmup_steps, min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = rate
        with autocast(precision):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        lrs.append(rate)
        tokens += int(batch["attention_mask"].sum())
        examples += batch["input_ids"].size(0)
        elapsed = time.perf_counter() - started - checkpoint_time
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens / elapsed:,.0f}", refresh=False)
        if checkpoint_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            saving = time.perf_counter()
            last_checkpoint = checkpoint(step + 1)
            checkpoint_time += time.perf_counter() - saving
        if on_step is not None:
            calling = time.perf_counter()
            on_step(model, step + 1, total_steps)
            checkpoint_time += time.perf_counter() - calling
    bar.close()
    wall = time.perf_counter() - started - checkpoint_time
    if checkpoint_dir is not None and (last_checkpoint is None or not last_checkpoint.endswith(f"{total_steps:06d}")):
        last_checkpoint = checkpoint(total_steps)
    model.eval()
    return TrainResult(
        steps=total_steps,
        losses=losses,
        learning_rates=lrs,
        trainable_slots=slots,
        batch_size=batch_size,
        flops_per_example=flops_per_example,
        train_flops=flops_per_example * batch_size * total_steps,
        wall_time_s=wall,
        examples_per_s=examples / wall if wall > 0 else 0.0,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        checkpoint=last_checkpoint,
        extra={"recipe": chosen.as_dict(), "precision": precision,
               **({"lora": describe(adapters, adapter_params)} if adapted is not None else {})},
        adapted=adapted,
    )


def train_in_stages(model: Model, task: Task, recipe: Recipe, total_steps: int, explicit: Mapping[str, Any],
                    seed: int = 0, progress: bool = True, desc: str | None = None,
                    on_step: Callable[[Model, int, int], None] | None = None, lora: Any = None,
                    precision: str = "float32") -> TrainResult:
    """Trains the recipe's stages one after the other (each its own schedule) and returns one
    TrainResult: losses of every step, FLOPs summed, the stages listed in extra["stages"]. Options
    the caller gave explicitly apply to every stage. on_step sees the steps of all stages counted
    together: (model, steps done since the first stage began, total_steps). lora: the adapters `model` already
    holds (train put them there), trained in the stages whose slots include the LM."""
    results, done = [], 0
    for stage, steps in stage_plan(recipe, total_steps):
        # Called only while this stage trains, so `done` holds the steps of the stages before it.
        hook = None if on_step is None else (lambda m, step, _stage_total: on_step(m, done + step, total_steps))
        results.append(train(model, task, steps, recipe=stage, seed=seed, progress=progress, on_step=hook, lora=lora,
                             precision=precision,
                             desc=f"{desc or model.name} {stage.name}", **{k: v for k, v in explicit.items() if v is not None}))
        done += steps
    wall = sum(r.wall_time_s for r in results)
    examples = sum(r.steps * r.batch_size for r in results)
    flops = sum(r.train_flops for r in results)
    return TrainResult(
        steps=sum(r.steps for r in results), losses=[x for r in results for x in r.losses],
        learning_rates=[x for r in results for x in r.learning_rates],
        trainable_slots=tuple(dict.fromkeys(s for r in results for s in r.trainable_slots)),
        batch_size=results[-1].batch_size, flops_per_example=round(flops / max(1, examples)), train_flops=flops,
        wall_time_s=wall, examples_per_s=examples / wall if wall > 0 else 0.0,
        tokens_per_s=sum(r.tokens_per_s * r.wall_time_s for r in results) / wall if wall > 0 else 0.0,
        extra={"recipe": {**recipe.as_dict(), "name": recipe.name}, "precision": precision, "stages": [
            {"name": r.extra["recipe"]["name"], "steps": r.steps, "trainable": list(r.trainable_slots),
             "train_flops": r.train_flops} for r in results]},
    )
