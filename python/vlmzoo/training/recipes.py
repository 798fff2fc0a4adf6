"""Training recipes: which slots train, the learning rate and schedule, the share of caption data,
and the initialisation, in one place that `vlmzoo.train`, `vlmzoo.compare` and the notebooks all read.

A recipe belongs to a family (the slots that make sense to train differ) and to a starting point:
"scratch" for the random tiny models the built-in tasks train (the default everywhere), "stage1"
for pretrained towers (the family's usual first stage, e.g. LLaVA's projector-only alignment).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Mapping

from vlmzoo.config.presets import families
from vlmzoo.config.towers import SLOTS

# The slots each family trains in its usual first stage, when its towers come pretrained: family data
# (configs/families/<name>.json, "stages" and "default_stage"), the same files the C++ core reads.
FAMILY_TRAINABLE: dict[str, tuple[str, ...]] = {
    name: tuple(data["stages"][data["default_stage"]]) for name, data in families().items()
}
DEFAULT_RECIPE = "scratch"


@dataclass(frozen=True)
class Recipe:
    name: str
    trainable: tuple[str, ...]  # slots whose parameters train; the others stay frozen
    lr: float  # peak learning rate (AdamW, betas 0.9/0.95)
    caption_fraction: float  # share of each epoch made of the task's template captions
    init_std: float | None  # re-initialise N(0, init_std) from the seed before training; None keeps the weights
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: float = 0.05  # share of the steps spent warming the learning rate up
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0
    # Runs of at most short_run_steps steps take these options instead (measured: see the recipe's why).
    short_run_steps: int = 0
    short_run: tuple[tuple[str, Any], ...] = ()
    # Training in stages, one after the other on the same model: (share of the steps, options that
    # change this recipe for the stage), e.g. LLaVA's projector-only alignment on captions, then
    # projector + LLM on the questions. Empty: one stage.
    stages: tuple[tuple[float, tuple[tuple[str, Any], ...]], ...] = ()
    # Train the LM through LoRA adapters instead of fully: a dict of peft.LoraConfig fields ({} for the
    # defaults of vlmzoo.training.lora); None trains it fully. `train(lora=...)` overrides it.
    lora: Mapping[str, Any] | None = None
    why: str = ""  # the measurement or source behind the numbers

    def with_options(self, **options: Any) -> "Recipe":
        """A copy with the options that are not None changed (explicit arguments beat the recipe)."""
        changes = {k: v for k, v in options.items() if v is not None}
        if isinstance(changes.get("trainable"), list):
            changes["trainable"] = tuple(changes["trainable"])
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settle(recipe: Recipe, explicit: Mapping[str, Any], steps_of: Callable[[Recipe], int]) -> tuple[Recipe, int]:
    """(recipe with the caller's explicit options, optimizer steps), switching to the recipe's
    short-run options when the budget buys at most short_run_steps; explicit options always win."""
    chosen = recipe.with_options(**explicit)
    steps = steps_of(chosen)
    if chosen.short_run and steps <= chosen.short_run_steps:
        short = {k: v for k, v in chosen.short_run if explicit.get(k) is None}
        if short:
            chosen = replace(chosen.with_options(**short), name=f"{chosen.name}-short")
            steps = steps_of(chosen)
    return chosen, steps


# Measured on the tiny LLaVA on shapes, batches of 32. Compare's default budget (~225 steps; chance
# 42.8%): a frozen, well-initialised random ViT is a stable random-feature extractor (training it too,
# or only the projector, stays at chance); lr 1e-3 with a quarter of captions 53.5%, without captions
# 48.3%; lr 3e-3 with captions 40.8%; lr 2e-3 without 40.3%. Twenty steps need the opposite: at lr
# 1e-3 the model answers <eos> first (83/100 empty without captions; with captions all empty or "a",
# the captions' first word); without captions lr 5e-3 gave an answer to every question for 5 of 5
# random inits (25-37.5%: the majority word, once also counts), 3e-3 and 2e-3 left a few empty for one init.
_SCRATCH = Recipe(
    name="scratch", trainable=("abstractor", "llm"), lr=1e-3, caption_fraction=0.25, init_std=0.02,
    short_run_steps=50, short_run=(("lr", 5e-3), ("caption_fraction", 0.0)),
    why="tiny LLaVA on shapes: ~225 steps of 32 -> 53.5% (chance 42.8%) at lr 1e-3 with 25% captions, "
        "48.3% without captions, 40.8% at 3e-3; 20 steps -> empty answers at 1e-3, an answer to every "
        "question at 5e-3 without captions for 5 of 5 inits (runs of <= 50 steps use that)",
)
# A vision tower from vlmzoo.pretrain ("from" slot, vlmzoo.towers): the family's stages, as its data
# says (LLaVA: "align" trains the projector alone on captions, "instruct" adds the LLM on the questions).
# The tower stays frozen; init_std re-initialises only the slots not taken from a tower.
_PRETRAINED = Recipe(
    name="pretrained", trainable=("abstractor", "llm"), lr=1e-3, caption_fraction=0.25, init_std=0.02,
    stages=((0.15, (("trainable", ("abstractor",)), ("caption_fraction", 1.0), ("lr", 2e-3))),
            (0.85, ())),
    why="tiny LLaVA on shapes, compare's default budget (226 steps of 32, 11 TFLOPs; chance 42.75%), vision from "
        "clip-tiny-shapes: these two stages 55.5% (colour 67, count 58, position 53, presence 47); the one-stage "
        "scratch recipe on the same tower 47.5%; the from-scratch twin 53.5%. One seed each",
)
RECIPES: dict[str, dict[str, Recipe]] = {
    "llava": {
        "scratch": _SCRATCH,
        "stage1": Recipe(name="stage1", trainable=FAMILY_TRAINABLE["llava"], lr=2e-3, caption_fraction=0.0,
                         init_std=None, why="LLaVA-1.5 stage 1: align the projector to pretrained CLIP and LLM"),
        "pretrained": _PRETRAINED,
    },
}


def default_recipe(config: Mapping[str, Any]) -> str:
    """"pretrained" when the config's vision slot comes from a tower ({"from": ...}), else DEFAULT_RECIPE."""
    vision = config.get("vision")
    return "pretrained" if isinstance(vision, Mapping) and "from" in vision else DEFAULT_RECIPE


def scratch_trainable(family: str) -> tuple[str, ...]:
    """From scratch, a family trains its own stage's slots and the LM (the vision tower stays a frozen random
    feature extractor, as measured for LLaVA): Flamingo's gated cross-attention lives in the fusion slot, and
    left frozen its tanh gates stay at 0, so the LM never sees the image (flamingo-micro at chance, 42.3%)."""
    own = set(FAMILY_TRAINABLE.get(family, ())) | set(_SCRATCH.trainable)
    return tuple(slot for slot in SLOTS if slot in own)


def recipe_for(family: str | Mapping[str, Any], recipe: str | Recipe | None = None) -> Recipe:
    """The family's recipe by name ("scratch", "stage1", "pretrained"), or `recipe` itself when it is a
    Recipe. `family` may be a config: without a recipe name, its default_recipe is chosen."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(family, Mapping):
        family, recipe = family["family"], recipe or default_recipe(family)
    name = recipe or DEFAULT_RECIPE
    own = RECIPES.get(family, {})
    if name in own:
        return own[name]
    if name == "scratch":  # a family without measured numbers starts from the tiny LLaVA's
        return replace(_SCRATCH, trainable=scratch_trainable(family))
    if name == "stage1" and family in FAMILY_TRAINABLE:
        return replace(RECIPES["llava"]["stage1"], trainable=FAMILY_TRAINABLE[family])
    if name == "pretrained" and family in FAMILY_TRAINABLE:
        return replace(_PRETRAINED, stages=((0.15, (("trainable", FAMILY_TRAINABLE[family]), ("caption_fraction", 1.0),
                                                     ("lr", 2e-3))), (0.85, ())))
    known = sorted({*own, "scratch", *(["stage1", "pretrained"] if family in FAMILY_TRAINABLE else [])})
    raise ValueError(f"recipe {name!r} is not defined for family {family!r}; recipes: {', '.join(known)}")


def stage_plan(recipe: Recipe, total_steps: int) -> list[tuple[Recipe, int]]:
    """(the recipe of each stage, its steps): the shares of `total_steps`, every stage at least one step."""
    plan, left = [], total_steps
    for i, (share, changes) in enumerate(recipe.stages):
        last = i == len(recipe.stages) - 1
        steps = left if last else max(1, min(left - (len(recipe.stages) - 1 - i), round(share * total_steps)))
        stage = replace(recipe.with_options(**dict(changes)), name=f"{recipe.name}/stage{i + 1}", stages=())
        plan.append((stage, steps))
        left -= steps
    return plan
