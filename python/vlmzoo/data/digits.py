"""The `digits` task: a multi-digit number written with scikit-learn's handwritten digits, read back digit by digit.

Answers are spelled digit by digit ("3 7 2") so the vocabulary stays at ten digit words
and the model must read every digit, which is the fine-grained part. The 1797 sklearn
digit images are split by index so test digits are handwriting the model never saw.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .example import Example
from .tokenizer import split_words

NUMBER_QUESTION = "what number is written ?"
MIN_DIGITS, MAX_DIGITS = 2, 4
# Contiguous index ranges of sklearn's 1797 digit images (about 70/13/17 %); each split draws only from its own.
DIGIT_IMAGE_SPLITS = {"train": range(0, 1260), "val": range(1260, 1500), "test": range(1500, 1797)}
# Digit height as a fraction of the canvas side: four digits plus gaps still fit on one line.
DIGIT_SIZE_RANGE = (0.17, 0.22)
DIGIT_GAP_RANGE = (0.01, 0.03)
PAPER_NOISE_STD = 6.0


@dataclass(frozen=True)
class DigitStrip:
    image_indices: tuple[int, ...]  # indices into sklearn.datasets.load_digits(), left to right
    labels: tuple[int, ...]  # the digit each image shows


@functools.lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (images [1797, 8, 8] float32 ink in 0..1, labels [1797] int)."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def sample_digit_strip(rng: np.random.Generator, split: str) -> DigitStrip:
    """Draws 2..4 digit images of `split`; the first is never a 0 so the strip reads as a number."""
    if split not in DIGIT_IMAGE_SPLITS:
        raise ValueError(f"digits: unknown split {split!r}; expected one of {sorted(DIGIT_IMAGE_SPLITS)}")
    _, labels = load_digit_images()
    pool, first_pool = _split_pools(split)
    n_digits = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
    indices = [int(rng.choice(first_pool))] + [int(i) for i in rng.choice(pool, size=n_digits - 1)]
    return DigitStrip(image_indices=tuple(indices), labels=tuple(int(labels[i]) for i in indices))


@functools.lru_cache(maxsize=None)
def _split_pools(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(all image indices of `split`, those not showing a 0), cached: sampling runs thousands of times."""
    _, labels = load_digit_images()
    pool = np.asarray(DIGIT_IMAGE_SPLITS[split])
    return pool, pool[labels[pool] != 0]


def render_digit_strip(strip: DigitStrip, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Writes the strip's digits left to right in dark ink on light paper, at a random size and place."""
    images, _ = load_digit_images()
    n = len(strip.image_indices)
    digit_px = max(8, int(image_size * rng.uniform(*DIGIT_SIZE_RANGE)))
    gaps = (image_size * rng.uniform(*DIGIT_GAP_RANGE, size=n)).astype(int)
    width = n * digit_px + int(gaps[1:].sum())
    x = int(rng.integers(0, max(1, image_size - width + 1)))
    y_line = int(rng.integers(0, image_size - digit_px + 1))

    ink = np.zeros((image_size, image_size), np.float32)
    for k, index in enumerate(strip.image_indices):
        x += int(gaps[k]) if k else 0
        # A little vertical wobble per digit, like handwriting on a line.
        y = int(np.clip(y_line + rng.integers(-2, 3), 0, image_size - digit_px))
        glyph = Image.fromarray(images[index], "F").resize((digit_px, digit_px), Image.Resampling.BILINEAR)
        ink[y : y + digit_px, x : x + digit_px] = np.maximum(ink[y : y + digit_px, x : x + digit_px], glyph)
        x += digit_px

    paper = float(rng.uniform(210, 250))
    ink_level = float(rng.uniform(0, 70))
    noise = rng.standard_normal(ink.shape, dtype=np.float32) * PAPER_NOISE_STD
    gray = paper * (1.0 - ink) + ink_level * ink + noise
    return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L").convert("RGB")


def caption_digit_strip(strip: DigitStrip) -> str:
    return "the number " + " ".join(str(d) for d in strip.labels)


def make_digit_examples(split: str, n: int, rng: np.random.Generator, image_size: int) -> list[Example]:
    """`n` examples of `split`, each a fresh number asked with NUMBER_QUESTION, answered "3 7 2"."""
    examples = []
    for _ in range(n):
        strip = sample_digit_strip(rng, split)
        image = render_digit_strip(strip, image_size, rng)
        answer = " ".join(str(d) for d in strip.labels)
        examples.append(Example(image, NUMBER_QUESTION, answer, "number", source=strip))
    return examples


# Every word a digits question, answer or caption can contain, in a fixed order (stable token ids).
DIGIT_VOCABULARY = tuple(dict.fromkeys([*split_words(NUMBER_QUESTION), *"0123456789", "the"]))
