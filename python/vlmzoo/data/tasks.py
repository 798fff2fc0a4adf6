"""The registry of built-in tasks and the `Task` object a training or evaluation loop consumes."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .batching import build_prompt, collate
from .digits import DIGIT_VOCABULARY, caption_digit_strip, make_digit_examples
from .example import Example
from .preprocess import CLIP_MEAN, CLIP_STD
from .scenes import SHAPE_VOCABULARY, caption_scene, make_shape_examples
from .tokenizer import WordTokenizer, split_words

__all__ = ["TASKS", "Task", "TaskSpec", "as_task", "make_task", "build_prompt", "CAPTION_QUESTION", "SPLITS"]

SPLITS = ("train", "val", "test")
# The instruction of caption examples (alignment pre-training, LLaVA stage-1 style).
CAPTION_QUESTION = "what is in the image ?"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 448


@dataclass(frozen=True)
class TaskSpec:
    description: str
    vocabulary: tuple[str, ...]  # every word of its questions, answers and captions
    # (split, n, rng, image_size) -> n examples; split matters where image sources are split (digits).
    make_examples: Callable[[str, int, np.random.Generator, int], list[Example]]
    caption: Callable[[Any], str]  # Example.source -> template caption


def _make_shape_examples(split: str, n: int, rng: np.random.Generator, image_size: int) -> list[Example]:
    return make_shape_examples(n, rng, image_size)  # scenes are synthetic: every split draws from the same law


TASKS = {
    "shapes": TaskSpec(
        description="1-4 coloured shapes; questions on colour, count, relative position, presence",
        vocabulary=SHAPE_VOCABULARY,
        make_examples=_make_shape_examples,
        caption=caption_scene,
    ),
    "digits": TaskSpec(
        description="2-4 handwritten sklearn digits on paper; read the number digit by digit",
        vocabulary=DIGIT_VOCABULARY,
        make_examples=make_digit_examples,
        caption=caption_digit_strip,
    ),
}


class Task:
    """Examples of one built-in task, split into train/val/test, with its tokenizer and baselines.

    `captions` holds one caption example per train image (question CAPTION_QUESTION,
    answer the template caption), for alignment pre-training; it is a fourth split
    name accepted by `examples` and `batches`.
    """

    def __init__(self, name: str, image_size: int, tokenizer: WordTokenizer, splits: dict[str, list[Example]]):
        self.name = name
        self.image_size = image_size
        self.tokenizer = tokenizer
        self._splits = splits
        qa_examples = [e for split in SPLITS for e in splits[split]]
        # Answers seen in any split (for digits, the possible numbers are far more than those drawn).
        self.answers: frozenset[str] = frozenset(e.answer for e in qa_examples)
        self.chance_accuracy: dict[str, float] = _majority_baseline(splits["train"], splits["test"])

    @property
    def train(self) -> list[Example]:
        return self._splits["train"]

    @property
    def val(self) -> list[Example]:
        return self._splits["val"]

    @property
    def test(self) -> list[Example]:
        return self._splits["test"]

    @property
    def captions(self) -> list[Example]:
        return self._splits["captions"]

    @property
    def kinds(self) -> list[str]:
        """The question kinds of this task, sorted."""
        return sorted({e.kind for split in SPLITS for e in self._splits[split]})

    def examples(self, split: str) -> list[Example]:
        if split not in self._splits:
            raise ValueError(f"Task {self.name!r}: unknown split {split!r}; expected one of {list(self._splits)}")
        return self._splits[split]

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        visual_tokens_per_image: int,
        image_size: int | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[dict]:
        """Training batches of `split`: dicts of input_ids, attention_mask, pixel_values, labels.

        See `collate` for the layout; image_size defaults to the size the task was rendered at.
        The same (shuffle, seed) gives the same order.
        """
        if batch_size < 1:
            raise ValueError(f"Task.batches: batch_size must be >= 1, got {batch_size}")
        examples = self.examples(split)
        order = np.random.default_rng(seed).permutation(len(examples)) if shuffle else np.arange(len(examples))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            chunk = [examples[i] for i in order[start : start + batch_size]]
            yield collate(
                chunk,
                self.tokenizer,
                visual_tokens_per_image=visual_tokens_per_image,
                image_size=image_size or self.image_size,
                mean=mean,
                std=std,
            )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(e)}" for s, e in self._splits.items())
        return f"Task({self.name!r}, image_size={self.image_size}, {sizes}, vocab={len(self.tokenizer)})"


def _majority_baseline(train: list[Example], test: list[Example]) -> dict[str, float]:
    """Per question kind: test accuracy of always answering that kind's most frequent train answer.

    This is what a model that ignores the image (and the question's specifics) can reach.
    Ties go to the alphabetically first answer. "all" weights kinds by their share of the test split.
    """
    train_answers: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        train_answers[e.kind][e.answer] += 1
    test_by_kind: dict[str, list[str]] = defaultdict(list)
    for e in test:
        test_by_kind[e.kind].append(e.answer)
    baseline, correct = {}, 0
    for kind, answers in sorted(test_by_kind.items()):
        counts = train_answers[kind]
        guess = min(counts, key=lambda a: (-counts[a], a)) if counts else None
        hits = sum(a == guess for a in answers)
        baseline[kind] = hits / len(answers)
        correct += hits
    if test:
        baseline["all"] = correct / len(test)
    return baseline


def make_task(
    name: str,
    *,
    seed: int = 0,
    image_size: int = 64,
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 500,
) -> Task:
    """Generates task `name` (a key of TASKS) deterministically from `seed`.

    Each split has its own random stream, so changing n_train leaves val and test unchanged.
    """
    if name not in TASKS:
        raise ValueError(f"make_task: unknown task {name!r}; valid tasks are {sorted(TASKS)}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"make_task: image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}")
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"make_task: n_{split} must be >= 0, got {n}")
    spec = TASKS[name]
    split_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(SPLITS))]
    splits = {
        split: spec.make_examples(split, sizes[split], rng, image_size) for split, rng in zip(SPLITS, split_rngs)
    }
    splits["captions"] = [
        Example(e.image, CAPTION_QUESTION, spec.caption(e.source), "caption", source=e.source) for e in splits["train"]
    ]
    tokenizer = WordTokenizer([*spec.vocabulary, *split_words(CAPTION_QUESTION)])
    return Task(name, image_size, tokenizer, splits)


def as_task(task: "str | Task", where: str = "task") -> Task:
    """`task` itself, or the built-in task of that name generated as make_task does by default (seed 0):
    every function that takes a task takes its name too, and the same name gives the same data."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"{where}: unknown task {task!r}; built-in tasks are {', '.join(sorted(TASKS))} "
                             "(or pass a vlmzoo.data.Task)")
        return make_task(task)
    raise TypeError(f"{where}: expected a task name ({', '.join(sorted(TASKS))}) or a vlmzoo.data.Task, "
                    f"got {type(task).__name__}")
