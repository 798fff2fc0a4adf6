"""The `shapes` task: rendered scenes of coloured shapes, with questions answered from each scene's description.

Every answer is computed from the structured `Scene`, never from pixels, and scenes are
sampled so that each answer is visually decidable: shapes do not overlap, each
(colour, kind) pair appears at most once, and position questions only compare shapes
whose centres are clearly apart.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .example import Example
from .tokenizer import split_words

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 40),
    "purple": (145, 60, 185),
    "orange": (250, 140, 20),
}
SHAPE_KINDS = ("circle", "square", "triangle")
COUNT_WORDS = ("zero", "one", "two", "three", "four")
MAX_SHAPES = 4
# Bounding-circle radius as a fraction of the image side: large enough to read at 64 px,
# small enough that four shapes fit without touching.
RADIUS_RANGE = (0.09, 0.15)
# Centres closer than this (fraction of the side) along an axis make "left of"/"above" a judgement call.
POSITION_MARGIN = 0.08
# Colours are jittered per shape so the model learns colour categories, not six exact RGB values.
COLOR_JITTER = 20
BACKGROUND_NOISE_STD = 18.0

QUESTION_KINDS = ("color", "count", "position", "presence")
QUESTION_TEMPLATES = {
    "color": "what color is the {kind} ?",
    "count": "how many shapes ?",
    "position": "is the {first} {relation} the {second} ?",
    "presence": "is there a {thing} ?",
}
# relation word -> (axis of the centre, whether the first shape's coordinate is smaller); y grows downwards.
RELATIONS = {"left of": (0, True), "right of": (0, False), "above": (1, True), "below": (1, False)}


@dataclass(frozen=True)
class Shape:
    color: str  # a key of COLORS
    kind: str  # one of SHAPE_KINDS
    center: tuple[float, float]  # (x, y) as fractions of the image side, y grows downwards
    radius: float  # bounding-circle radius, fraction of the side; shapes never cross it
    fill: tuple[int, int, int]  # the RGB actually painted: COLORS[color] with jitter

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background_level: int  # gray level of the background
    background_noise_seed: int | None  # None for a plain background


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draws 1..MAX_SHAPES shapes with distinct (colour, kind) whose bounding circles do not overlap."""
    n_shapes = int(rng.integers(1, MAX_SHAPES + 1))
    pairs = [(c, k) for c in COLORS for k in SHAPE_KINDS]
    while True:  # restart the scene in the rare case a shape finds no free room
        chosen = rng.choice(len(pairs), size=n_shapes, replace=False)
        shapes: list[Shape] = []
        for pair_index in chosen:
            color, kind = pairs[pair_index]
            shape = _place_shape(rng, color, kind, shapes)
            if shape is None:
                break
            shapes.append(shape)
        if len(shapes) == n_shapes:
            break
    noisy = bool(rng.random() < 0.5)
    return Scene(
        shapes=tuple(shapes),
        background_level=int(rng.integers(70, 200)),
        background_noise_seed=int(rng.integers(2**31)) if noisy else None,
    )


def _place_shape(rng: np.random.Generator, color: str, kind: str, placed: list[Shape]) -> Shape | None:
    for _ in range(50):
        radius = float(rng.uniform(*RADIUS_RANGE))
        x, y = (float(v) for v in rng.uniform(radius, 1.0 - radius, size=2))
        if all(math.hypot(x - s.center[0], y - s.center[1]) >= radius + s.radius for s in placed):
            jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
            fill = tuple(int(v) for v in np.clip(np.array(COLORS[color]) + jitter, 0, 255))
            return Shape(color=color, kind=kind, center=(x, y), radius=radius, fill=fill)
    return None


def render_scene(scene: Scene, image_size: int) -> Image.Image:
    """Paints `scene` as an RGB image of image_size x image_size pixels."""
    if scene.background_noise_seed is None:
        image = Image.new("RGB", (image_size, image_size), (scene.background_level,) * 3)
    else:
        noise_rng = np.random.default_rng(scene.background_noise_seed)
        noise = noise_rng.standard_normal((image_size, image_size, 1), dtype=np.float32) * BACKGROUND_NOISE_STD
        pixels = np.clip(scene.background_level + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
        image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy, r = shape.center[0] * image_size, shape.center[1] * image_size, shape.radius * image_size
        if shape.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shape.fill)
        elif shape.kind == "square":
            half = r / math.sqrt(2.0)  # corners on the bounding circle
            draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=shape.fill)
        elif shape.kind == "triangle":
            # Upright equilateral triangle with vertices on the bounding circle.
            angles = (-90.0, 30.0, 150.0)
            points = [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in angles]
            draw.polygon(points, fill=shape.fill)
        else:
            raise ValueError(f"render_scene: unknown shape kind {shape.kind!r}; expected one of {SHAPE_KINDS}")
    return image


def caption_scene(scene: Scene) -> str:
    """A template caption naming the shapes left to right: "a red circle , a blue square and a green triangle"."""
    names = [f"a {s.name}" for s in sorted(scene.shapes, key=lambda s: s.center[0])]
    if len(names) == 1:
        return names[0]
    return " , ".join(names[:-1]) + " and " + names[-1]


def color_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """Asks the colour of a kind that appears exactly once (otherwise "the circle" is ambiguous)."""
    kinds = [s.kind for s in scene.shapes]
    unique = [s for s in scene.shapes if kinds.count(s.kind) == 1]
    if not unique:
        return None
    shape = unique[int(rng.integers(len(unique)))]
    return QUESTION_TEMPLATES["color"].format(kind=shape.kind), shape.color


def count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    return QUESTION_TEMPLATES["count"], COUNT_WORDS[len(scene.shapes)]


def position_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str] | None:
    """Asks whether one shape is left of/right of/above/below another; only clearly separated pairs qualify."""
    candidates = []
    for first in scene.shapes:
        for second in scene.shapes:
            if first is second:
                continue
            for relation, (axis, first_smaller) in RELATIONS.items():
                delta = second.center[axis] - first.center[axis]
                if abs(delta) >= POSITION_MARGIN:
                    candidates.append((first, second, relation, (delta > 0) == first_smaller))
    if not candidates:
        return None
    first, second, relation, holds = candidates[int(rng.integers(len(candidates)))]
    question = QUESTION_TEMPLATES["position"].format(first=first.name, relation=relation, second=second.name)
    return question, "yes" if holds else "no"


def presence_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """Asks about a shape in the scene or one absent from it, each half the time."""
    present = {(s.color, s.kind) for s in scene.shapes}
    if rng.random() < 0.5:
        color, kind = sorted(present)[int(rng.integers(len(present)))]
    else:
        absent = sorted((c, k) for c in COLORS for k in SHAPE_KINDS if (c, k) not in present)
        color, kind = absent[int(rng.integers(len(absent)))]
    question = QUESTION_TEMPLATES["presence"].format(thing=f"{color} {kind}")
    return question, "yes" if (color, kind) in present else "no"


_QUESTION_MAKERS = {
    "color": color_question,
    "count": count_question,
    "position": position_question,
    "presence": presence_question,
}


def make_shape_examples(n: int, rng: np.random.Generator, image_size: int) -> list[Example]:
    """`n` examples, each a fresh scene with one question of a kind drawn uniformly among those that apply."""
    examples = []
    for _ in range(n):
        scene = sample_scene(rng)
        for kind in rng.permutation(QUESTION_KINDS):
            made = _QUESTION_MAKERS[str(kind)](scene, rng)
            if made is not None:
                break
        question, answer = made  # count questions always apply, so some kind always answers
        examples.append(Example(render_scene(scene, image_size), question, answer, str(kind), source=scene))
    return examples


def _shape_vocabulary() -> tuple[str, ...]:
    template_words = [re.sub(r"\{\w+\}", " ", t) for t in QUESTION_TEMPLATES.values()]
    texts = [*template_words, *RELATIONS, *COLORS, *SHAPE_KINDS, *COUNT_WORDS, "yes no", "a , and"]
    return tuple(dict.fromkeys(w for text in texts for w in split_words(text)))


# Every word a shapes question, answer or caption can contain, in a fixed order (stable token ids).
SHAPE_VOCABULARY = _shape_vocabulary()
