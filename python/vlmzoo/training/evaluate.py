"""Exact-match accuracy of greedy answers on held-out questions, per question kind and overall."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from vlmzoo.data import Task, as_task, collate
from vlmzoo.models.model import Model
from vlmzoo.training.train import check_model_fits_task, normalization


@dataclass
class Evaluation:
    accuracy: dict[str, float]  # per question kind, and "all" over every example
    counts: dict[str, int]  # examples per kind, and "all"
    predictions: list[dict[str, Any]] = field(default_factory=list)  # question, answer, prediction, kind, correct

    @property
    def overall(self) -> float:
        return self.accuracy["all"]


@torch.no_grad()
def evaluate(
    model: Model,
    task: str | Task,
    split: str = "test",
    *,
    batch_size: int = 64,
    max_examples: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Greedy-decodes an answer to every question of `split` (left-padded batches) and scores it by
    exact match of the answer's words (special tokens dropped, stopping at <eos>). task: a Task or a
    built-in task's name (make_task's default data, the same `train` takes for that name)."""
    task = as_task(task)
    check_model_fits_task(model, task.tokenizer)
    tokenizer = task.tokenizer
    examples = task.examples(split)[:max_examples]
    # Longest answer plus its <eos>: greedy decoding never needs more to be right.
    max_new_tokens = 1 + max((len(tokenizer.encode(a)) for a in task.answers), default=1)
    mean, std = normalization(model.config)
    image_size = model.config["vision"].get("image_size", task.image_size)
    was_training = model.training
    model.eval()
    predictions = []
    for start in tqdm(range(0, len(examples), batch_size), desc="evaluate", disable=not progress, leave=False):
        chunk = examples[start : start + batch_size]
        batch = collate(chunk, tokenizer, visual_tokens_per_image=model.visual_tokens_per_image,
                        image_size=image_size, mean=mean, std=std, with_answers=False)
        prompt_length = batch["input_ids"].size(1)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_id,
                                pad_token_id=tokenizer.pad_id)
        for example, row in zip(chunk, output[:, prompt_length:].tolist()):
            if tokenizer.eos_id in row:
                row = row[: row.index(tokenizer.eos_id)]
            prediction = tokenizer.decode(row)
            predictions.append({
                "question": example.question, "answer": example.answer, "prediction": prediction,
                "kind": example.kind, "correct": prediction == tokenizer.decode(tokenizer.encode(example.answer)),
            })
    model.train(was_training)
    hits: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for p in predictions:
        for key in (p["kind"], "all"):
            counts[key] += 1
            hits[key] += p["correct"]
    accuracy = {k: hits[k] / counts[k] for k in sorted(counts)}
    if not predictions:
        accuracy, counts = {"all": 0.0}, {"all": 0}
    return Evaluation(accuracy=accuracy, counts=dict(counts), predictions=predictions)
