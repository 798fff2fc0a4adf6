"""An encoder with a VQA head (BEiT-3) on the built-in tasks: a question-answering task as VQA classification over its answer set
(BEiT-3's VQAv2 recipe: the joint class token through the vqa head), batches, a training loop and
accuracy. Images are normalised with mean = std = 0.5, as BEiT-3's fine-tuning transforms
(IMAGENET_INCEPTION_MEAN / STD); texts are <bos> question <eos>, padded on the right."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vlmzoo.data.preprocess import images_to_tensor
from vlmzoo.families.beit3.processor import BEIT3_MEAN, BEIT3_STD



def answer_set(task: Any) -> list[str]:
    """The task's answers in a fixed order: class i of the vqa head is answer_set(task)[i]."""
    return sorted(task.answers)


def task_overrides(task: Any) -> dict[str, Any]:
    """Slot fields that fit a BEiT-3 config to the task: vocabulary, pad id, image size, classes."""
    return {"vision": {"image_size": task.image_size},
            "llm": {"vocab": max(len(task.tokenizer), 8), "pad_token_id": task.tokenizer.pad_id},
            "head": {"kind": "vqa", "classes": len(task.answers)}}


def vqa_batch(examples: Sequence[Any], task: Any, image_size: int, answers: Sequence[str]) -> dict[str, torch.Tensor]:
    tok = task.tokenizer
    rows = [[tok.bos_id, *tok.encode(e.question), tok.eos_id] for e in examples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    index = {a: i for i, a in enumerate(answers)}
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": images_to_tensor([e.image for e in examples], image_size, BEIT3_MEAN, BEIT3_STD),
            "labels": torch.tensor([index[e.answer] for e in examples])}


def vqa_batches(task: Any, split: str, batch_size: int, *, image_size: int | None = None, shuffle: bool = False,
                seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    examples = task.examples(split)
    order = np.random.default_rng(seed).permutation(len(examples)) if shuffle else np.arange(len(examples))
    answers = answer_set(task)
    for start in range(0, len(order), batch_size):
        yield vqa_batch([examples[i] for i in order[start : start + batch_size]], task, image_size or task.image_size,
                        answers)


def train_vqa(model: Any, task: Any, steps: int, *, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
              weight_decay: float = 0.01) -> list[float]:
    """AdamW on the answer cross-entropy for `steps` steps; returns the loss of each step."""
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        for batch in vqa_batches(task, "train", batch_size, shuffle=True, seed=seed + epoch):
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses


@torch.no_grad()
def vqa_accuracy(model: Any, task: Any, split: str = "test", batch_size: int = 64) -> float:
    model.eval()
    right = total = 0
    for batch in vqa_batches(task, split, batch_size):
        labels = batch.pop("labels")
        right += int((model(**batch).logits.argmax(-1) == labels).sum())
        total += len(labels)
    return right / max(total, 1)
