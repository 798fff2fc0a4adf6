"""One `vlmzoo compare` row for a BEiT-3 config: trained from scratch on a built-in task as VQA
classification over the task's answer set (the vqa head on the joint class token), at the FLOPs budget
the other rows get, scored by the same per-kind accuracy (argmax answer == the example's answer), plus
image-text retrieval recall@1 both ways on the test images and their captions (training.encoder_retrieval).
study.compare.train_and_evaluate hands multiway-encoder configs here; the returned dict has its shape."""
from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch

from vlmzoo.config.budget import parse_budget
from vlmzoo.models.multiway_encoder import MultiwayEncoderModel
from vlmzoo.study.design import image_path, trained_slots
from vlmzoo.study.measure import _peak_rss_mib, _save_model, curve_steps
from vlmzoo.training.encoder_retrieval import retrieval_recall
from vlmzoo.training.precision import autocast, resolve_precision
from vlmzoo.training.train import FINAL_LOSS, lr_at, mean_final_loss
from vlmzoo.training.vqa import answer_set, task_overrides, vqa_batch, vqa_batches

# The learning rate of a BEiT-3 row unless compare is given one (the LLaVA recipes' 1e-3 is not it). Measured
# 2026-12-06 on beit3-micro, shapes, compare's default budget (3.5e12 FLOPs: 831 steps of 32), seed 0, one
# run each, under load: lr 1e-3 -> 39.5% (chance 42.75%; the loss reaches the question-only prior and stays);
# lr 3e-4 -> 52.0% (colour 41%, count 64%); patch 8 (65 visual tokens, 282 steps) at 1e-3 -> 41.0%.
BEIT3_LR = 3e-4


def _mean_question_tokens(task: Any) -> int:
    examples = task.train
    return round(sum(2 + len(task.tokenizer.encode(e.question)) for e in examples) / max(1, len(examples)))


def train_flops_per_example(model: Any, task: Any) -> int:
    """Forward FLOPs of one example (core's count) times 3: forward, weight and input gradients."""
    forward = model._module.forward_flops(_mean_question_tokens(task), 1)
    return int(3 * forward["total"])


@torch.no_grad()
def evaluate_vqa(model: Any, task: Any, split: str = "test", max_examples: int | None = None,
                 batch_size: int = 64) -> dict[str, Any]:
    """Accuracy per question kind and overall; predictions as compare's evaluate lists them."""
    answers = answer_set(task)
    examples = task.examples(split)[:max_examples]
    was_training = model.training
    model.eval()
    predictions = []
    image_size = model.config["vision"]["image_size"]
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = vqa_batch(chunk, task, image_size, answers)
        batch.pop("labels")
        for example, index in zip(chunk, model(**batch).logits.argmax(-1).tolist()):
            predictions.append({"question": example.question, "answer": example.answer,
                                "prediction": answers[index], "kind": example.kind,
                                "correct": answers[index] == example.answer})
    model.train(was_training)
    hits: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for p in predictions:
        for key in (p["kind"], "all"):
            counts[key] += 1
            hits[key] += p["correct"]
    accuracy = {k: hits[k] / counts[k] for k in sorted(counts)} if predictions else {"all": 0.0}
    return {"accuracy": accuracy, "predictions": predictions}


def train_and_evaluate_vqa(name: str, config: dict[str, Any], task: Any, budget: int | str, seed: int, recipe: Any,
                       options: Mapping[str, Any], progress: bool = True, threads: int | None = None,
                       keep: Any = False, curve_points: int = 0, curve_examples: int = 64) -> dict[str, Any]:
    """compare.train_and_evaluate for a BEiT-3: AdamW (betas 0.9 / 0.95) at BEIT3_LR (or options' lr), the
    recipe's batch size, warmup, cosine decay and clipping, every slot trained from an N(0, 0.02) init
    drawn from the seed."""
    if threads:
        torch.set_num_threads(threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    rss_before = _peak_rss_mib()
    torch.manual_seed(seed)
    overrides = task_overrides(task)
    overrides["vision"]["image_size"] = config["vision"]["image_size"]  # the config's resolution; images resized
    model = MultiwayEncoderModel(config, name=name, **overrides)
    model._module.initialize_weights(0.02, seed)
    batch_size = int(options.get("batch_size", recipe.batch_size))
    lr = float(options.get("lr", BEIT3_LR))
    precision = resolve_precision(options.get("precision", "float32"))
    flops_per_example = train_flops_per_example(model, task)
    steps = parse_budget(budget, flops_per_step=flops_per_example * batch_size)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    warmup = max(1, round(recipe.warmup * steps))
    losses: list[float] = []
    measured: dict[int, float] = {}
    checkpoints = set(curve_steps(steps, curve_points)) if curve_points else set()
    eval_time = 0.0
    model.train()
    epoch, began = 0, time.perf_counter()
    while len(losses) < steps:
        for batch in vqa_batches(task, "train", batch_size, image_size=config["vision"]["image_size"], shuffle=True,
                                 seed=seed * 1000 + epoch):
            step = len(losses)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup, recipe.min_lr_ratio)
            with autocast(precision):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
            done = len(losses)
            if done < steps and done in checkpoints:
                t = time.perf_counter()
                measured[done] = evaluate_vqa(model, task, "test", max_examples=curve_examples)["accuracy"]["all"]
                eval_time += time.perf_counter() - t
            if done == steps:
                break
        epoch += 1
    train_time = time.perf_counter() - began - eval_time
    evaluation = evaluate_vqa(model, task, "test")
    recall = retrieval_recall(model, task)  # the class tokens of separate passes (the vqa head has no embeddings)
    if curve_points:
        subset = evaluation["predictions"][:curve_examples]
        measured[steps] = sum(p["correct"] for p in subset) / max(1, len(subset))
    peak = _peak_rss_mib()
    flops_per_step = flops_per_example * batch_size
    row = {
        "task": task.name, "model": name, "seed": seed, "family": model.config["family"], "recipe": "beit3-vqa-scratch",
        "precision": precision,
        "image_path": image_path(model.config),
        "trained": trained_slots(n for n, p in model.named_parameters() if p.requires_grad),
        "params_total": model.num_parameters(), "params_trainable": model.num_parameters(trainable_only=True),
        "visual_tokens_per_image": model.visual_tokens_per_image,
        "train_gflops": steps * flops_per_step / 1e9, "pretrain_gflops": 0.0, "steps": steps,
        "train_examples_per_s": steps * batch_size / max(train_time, 1e-9),
        "accuracy": evaluation["accuracy"]["all"],
        "chance_accuracy": task.chance_accuracy.get("all", float("nan")),
        **{f"accuracy_{k}": v for k, v in evaluation["accuracy"].items() if k != "all"},
        **recall,
        FINAL_LOSS: mean_final_loss(losses),
        "peak_rss_mib": peak, "peak_rss_over_baseline_mib": peak - rss_before, "curve_eval_s": eval_time,
        "wall_time_s": time.perf_counter() - started, "cpu_time_s": time.process_time() - cpu_started,
    }
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"{name}: the training loss is not finite")
    curve = {"step": list(range(1, steps + 1)), "loss": losses,
             "gflops": [s * flops_per_step / 1e9 for s in range(1, steps + 1)]}
    points = [{"task": task.name, "model": name, "seed": seed, "step": s, "gflops": s * flops_per_step / 1e9,
               "accuracy": a, "examples": min(curve_examples, len(task.test))} for s, a in sorted(measured.items())]
    kept: Any = None
    if isinstance(keep, (str, Path)):
        kept = str(_save_model(model, task, Path(keep)))
    elif keep:
        kept = {"config": model.config, "state_dict": dict(model.state_dict())}
    return {"row": row, "curve": curve, "points": points, "config": model.config, "model": kept}
