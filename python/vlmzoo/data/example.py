"""One question-answer example of a built-in task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass(frozen=True, eq=False)
class Example:
    image: Image.Image
    question: str
    answer: str
    kind: str  # the question family ("color", "count", "number", "caption", ...), for per-kind accuracy
    # What the image was rendered from (a Scene, a DigitStrip): lets tests and analyses check the answer.
    source: Any = None
