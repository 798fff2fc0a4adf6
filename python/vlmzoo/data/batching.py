"""The prompt layout shared by training and generation, and the collation of examples into batches.

Layout of one row:  <bos> <image>*visual_tokens_per_image question-tokens answer-tokens <eos>
Rows are LEFT padded so that, at generation time, every prompt ends at the last column
and new tokens are appended to the right of all rows at once.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .example import Example
from .preprocess import CLIP_MEAN, CLIP_STD, images_to_tensor
from .tokenizer import WordTokenizer

# Label value ignored by torch.nn.functional.cross_entropy (its default ignore_index).
IGNORE_INDEX = -100


def build_prompt(tokenizer: WordTokenizer, question: str, visual_tokens_per_image: int) -> list[int]:
    """Prompt ids without the answer: <bos>, the image placeholders, then the question."""
    if visual_tokens_per_image < 0:
        raise ValueError(f"build_prompt: visual_tokens_per_image must be >= 0, got {visual_tokens_per_image}")
    return [tokenizer.bos_id] + [tokenizer.image_id] * visual_tokens_per_image + tokenizer.encode(question)


def collate(
    examples: Sequence[Example],
    tokenizer: WordTokenizer,
    *,
    visual_tokens_per_image: int,
    image_size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    with_answers: bool = True,
) -> dict[str, torch.Tensor]:
    """Left-padded batch of `examples`.

    Returns input_ids [B, T] long, attention_mask [B, T] long (0 on padding),
    pixel_values [B, 3, image_size, image_size] float, and, when with_answers,
    labels [B, T] long: IGNORE_INDEX everywhere except the answer tokens and the final
    <eos>. Labels sit at the same positions as the tokens they name (not shifted), as in
    transformers: the model shifts them when computing the next-token loss.
    With with_answers=False the rows are prompts only, ready for generation.
    """
    rows, label_rows = [], []
    for example in examples:
        prompt = build_prompt(tokenizer, example.question, visual_tokens_per_image)
        if with_answers:
            target = tokenizer.encode(example.answer) + [tokenizer.eos_id]
            rows.append(prompt + target)
            label_rows.append([IGNORE_INDEX] * len(prompt) + target)
        else:
            rows.append(prompt)
    length = max((len(r) for r in rows), default=0)
    batch_size = len(rows)
    input_ids = torch.full((batch_size, length), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        start = length - len(row)  # left padding: real tokens are right-aligned
        input_ids[i, start:] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, start:] = 1
        if with_answers:
            labels[i, start:] = torch.tensor(label_rows[i], dtype=torch.long)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": images_to_tensor([e.image for e in examples], image_size, mean, std),
    }
    if with_answers:
        batch["labels"] = labels
    return batch
