"""`vlmzoo.compare`: train and evaluate several architectures on the same data and budget, side by side."""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data import Task, make_task
from .presets import resolve_config
from .recipes import DEFAULT_RECIPE, Recipe, recipe_for

DEFAULT_PRESET = "llava-1.5-tiny"
# The tiny LLaVA preset and variants that each differ from it in one slot.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "llava-tiny": {},  # MLP projector, features of layer -2, CLIP-style ViT
    "llava-tiny/linear": {"abstractor": {"kind": "linear"}},
    "llava-tiny/layer-1": {"vision": {"feature_layers": -1}},
    # "full": SigLIP has no CLS, and "default" would drop a real patch (as transformers does).
    "llava-tiny/siglip": {"vision": {"style": "siglip", "select": "full"}},
    # The same model on a vision tower vlmzoo pretrains (CLIP on shapes' captions; cached): llava-tiny is its twin.
    "llava-tiny/clip-pretrained": {"vision": {"from": "clip-tiny-shapes"}},
}
# Other families' tiny presets, run beside the LLaVA set (each differs from it in several slots).
DEFAULT_OTHER_PRESETS = ["blip2-opt-tiny"]
# Sized so the four LLaVA runs end in under 10 minutes on 2 CPU cores (the tiny BLIP-2 adds its own); see the module test.
DEFAULT_TASK_SIZES = {"n_train": 6000, "n_val": 0, "n_test": 400}
DEFAULT_BUDGET = "1.1e13flops"  # about 225 steps of 32 for the tiny preset
# The training recipe (slots, lr, captions, init, batch size) lives in vlmzoo.recipes: `train` reads the same one.
# Columns the printed table shows, with their headers.
TABLE_COLUMNS = {
    "model": "model", "family": "family", "params_total": "params", "params_trainable": "trainable",
    "visual_tokens_per_image": "vis tok/img", "train_gflops": "train GFLOPs", "steps": "steps",
    "train_examples_per_s": "ex/s", "accuracy": "accuracy", "chance_accuracy": "chance",
    "peak_rss_mib": "peak RSS MiB", "wall_time_s": "wall s",
}


def default_configs() -> list[dict[str, Any]]:
    """The default comparison: the tiny LLaVA preset, its one-slot variants and the other families' tiny
    presets, as resolved configs."""
    return ([resolve_config(DEFAULT_PRESET, name=name, **overrides) for name, overrides in DEFAULT_VARIANTS.items()]
            + [resolve_config(name) for name in DEFAULT_OTHER_PRESETS])


def _named_configs(configs: Sequence[str | Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(unique display name, resolved config) for preset names, JSON paths or dicts."""
    named, seen = [], {}
    for config in configs:
        resolved = resolve_config(config)
        name = resolved.get("name") or (Path(config).stem if isinstance(config, str) else resolved["family"])
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name} #{seen[name]}", resolved))
    return named


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux: the process's resident-set high-water mark, C++ allocations included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_and_evaluate(name: str, config: dict[str, Any], task: Task, budget: int | str, seed: int,
                       recipe: Recipe, options: Mapping[str, Any], progress: bool = True, threads: int | None = None,
                       keep: bool | str = False) -> dict[str, Any]:
    """One row of the comparison: vlmzoo.recipes.train_for_task (build for the task's tokenizer,
    initialise and train as the recipe says, `options` overriding it), then evaluate. keep: True returns the trained
    weights, a folder path saves the model (and its tokenizer) there."""
    import torch

    from .evaluate import evaluate
    from .recipes import train_for_task

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    rss_before = _peak_rss_mib()
    model, result = train_for_task(config, task, budget, recipe, seed, name=name, progress=progress, desc=name,
                                   **options)
    evaluation = evaluate(model, task, "test")
    peak = _peak_rss_mib()
    row = {
        "model": name,
        "family": model.config["family"],
        "recipe": result.extra["recipe"]["name"],
        "seed": seed,
        "params_total": model.num_parameters(),
        "params_trainable": model.num_parameters(trainable_only=True),
        "visual_tokens_per_image": model.visual_tokens_per_image,
        "train_gflops": result.train_flops / 1e9,
        "steps": result.steps,
        "train_examples_per_s": result.examples_per_s,
        "accuracy": evaluation.accuracy["all"],
        "chance_accuracy": task.chance_accuracy.get("all", float("nan")),
        **{f"accuracy_{k}": v for k, v in evaluation.accuracy.items() if k != "all"},
        "final_loss": sum(result.losses[-10:]) / len(result.losses[-10:]),
        "peak_rss_mib": peak,
        "peak_rss_over_baseline_mib": peak - rss_before,
        "wall_time_s": time.perf_counter() - started,
    }
    curve = {"step": list(range(1, result.steps + 1)), "loss": result.losses,
             "gflops": [s * result.flops_per_example * result.batch_size / 1e9 for s in range(1, result.steps + 1)]}
    kept: Any = None
    if isinstance(keep, (str, Path)):
        kept = str(_save_model(model, task, Path(keep)))
    elif keep:
        kept = {"config": model.config, "state_dict": dict(model.state_dict())}
    return {"row": row, "curve": curve, "config": model.config, "model": kept}


def _save_model(model, task: Task, folder: Path) -> Path:
    """A folder vlmzoo.from_pretrained, AutoProcessor and `vlmzoo generate` read: weights, config, tokenizer."""
    from .processing.word import TOKENIZER_FILE

    model.save_pretrained(str(folder))
    (folder / TOKENIZER_FILE).write_text(json.dumps(task.tokenizer.to_dict()))
    return folder


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _isolated_worker(request: str, response: str) -> None:
    """Entry point of the fresh interpreter `_run_isolated` starts: unpickle, run, pickle the outcome."""
    import traceback

    args = pickle.loads(Path(request).read_bytes())
    try:
        outcome: dict[str, Any] = {"result": train_and_evaluate(*args), "error": None}
    except BaseException as error:  # noqa: BLE001  (handed to the parent, which re-raises it)
        outcome = {"result": None, "error": error, "traceback": traceback.format_exc()}
    try:
        payload = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle travels as its text
        payload = pickle.dumps({"result": None, "error": RuntimeError(outcome.get("traceback")), "traceback": ""})
    Path(response).write_bytes(payload)


def _run_isolated(args: tuple) -> dict[str, Any]:
    """train_and_evaluate(*args) in a fresh Python process, so its peak RSS is its own.

    A plain subprocess, not multiprocessing: multiprocessing's spawn re-imports the caller's main
    script in the child, which re-runs a top-level `compare(...)` without an
    `if __name__ == "__main__":` guard and breaks the pool. This child imports only vlmzoo."""
    with tempfile.TemporaryDirectory(prefix="vlmzoo-compare-") as tmp:
        request, response = Path(tmp) / "request.pkl", Path(tmp) / "response.pkl"
        request.write_bytes(pickle.dumps(args))
        # The child finds vlmzoo (and anything the caller imported) where the caller does.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])}
        code = "import sys; from vlmzoo.compare import _isolated_worker; _isolated_worker(sys.argv[1], sys.argv[2])"
        process = subprocess.run([sys.executable, "-c", code, str(request), str(response)], env=env)
        if not response.is_file():
            raise RuntimeError(f"compare: the process training {args[0]!r} exited with code {process.returncode} "
                               "before returning a result (killed for memory?)")
        outcome = pickle.loads(response.read_bytes())
    if outcome["error"] is not None:
        error = outcome["error"]
        if outcome.get("traceback"):
            error.add_note(f"in the process training {args[0]!r}:\n{outcome['traceback']}")
        raise error
    return outcome["result"]


class Comparison(tuple):
    """(table, figures), as `table, figures = compare(...)` unpacks it, with more attributes:
    models ({name: Model}, or {name: folder} when keep_models is a folder; empty unless kept),
    configs and recipes ({name: ...}), and rebuild(name) that retrains a row with
    vlmzoo.recipes.train_for_task from its config, recipe, seed and budget."""

    def __new__(cls, table, figures, *, models, configs, recipes, options, task, budget, seed):
        comparison = super().__new__(cls, (table, figures))
        comparison.table, comparison.figures, comparison.models = table, figures, models
        comparison.configs, comparison.recipes, comparison.options = configs, recipes, options
        comparison.task, comparison.budget, comparison.seed = task, budget, seed
        return comparison

    def rebuild(self, name: str, progress: bool = False):
        """(model, TrainResult) of row `name`, trained again exactly as compare trained it."""
        from .recipes import train_for_task

        if name not in self.configs:
            raise KeyError(f"no model {name!r} in this comparison; models: {', '.join(self.configs)}")
        return train_for_task(self.configs[name], self.task, self.budget, self.recipes[name], self.seed, name=name,
                              progress=progress, **self.options)


def compare(
    configs: Sequence[str | Mapping[str, Any]] | None = None,
    task: str | Task = "shapes",
    budget: int | str = DEFAULT_BUDGET,
    out: str | Path | None = None,
    seed: int = 0,
    *,
    task_sizes: Mapping[str, int] | None = None,
    image_size: int = 64,
    recipe: str | Recipe = DEFAULT_RECIPE,
    batch_size: int | None = None,
    lr: float | None = None,
    trainable: str | Sequence[str] | None = None,
    caption_fraction: float | None = None,
    init_std: float | None = None,
    threads: int | None = None,
    isolate: bool = True,
    keep_models: bool | str | Path = False,
    progress: bool = True,
    print_table: bool = True,
) -> Comparison:
    """Trains and evaluates every config on the same task, data order, budget and recipe.

    configs: preset names, JSON paths or dicts; None compares the tiny LLaVA preset with its
      one-slot variants (linear projector, feature layer -1, SigLIP-style vision), and the tiny BLIP-2.
    budget: steps (300, "300steps") or training FLOPs ("8e12flops"): at equal FLOPs a cheaper
      model takes more steps. recipe: a vlmzoo.recipes name ("scratch": projector + LLM trained,
      the vision tower at its random init, a quarter captions, re-initialised N(0, 0.02) from the
      seed) or a Recipe; batch_size, lr, trainable, caption_fraction and init_std override it.
      `vlmzoo.train` uses the same recipe, and vlmzoo.recipes.train_for_task rebuilds a row alone.
    threads: torch threads per model (None: torch's default). isolate: train each model in a fresh
      Python process (its peak RSS is its own; works from a script without a main guard).
    keep_models: True keeps the trained models in memory, a folder saves each there (loadable by
      vlmzoo.from_pretrained and `vlmzoo generate`).
    Returns a Comparison that unpacks as (DataFrame, {name: matplotlib Figure}) and holds .models,
    .configs and .rebuild(name); with `out`, writes results.csv, loss_curves.csv, configs.json and
    one PNG per figure there.
    """
    import pandas as pd

    from .plots import comparison_figures
    from .train import parse_budget

    # Check configs, recipe and budget before generating data, so a typo fails in a second.
    named = _named_configs(default_configs() if configs is None else list(configs))
    parse_budget(budget, flops_per_step=1.0)
    recipes = {name: recipe_for(config["family"], recipe) for name, config in named}
    # Explicit options beat the recipe (short-run options included), as they do in `train`.
    options = {k: v for k, v in dict(batch_size=batch_size, lr=lr, trainable=trainable,
                                     caption_fraction=caption_fraction, init_std=init_std).items() if v is not None}
    if isinstance(task, str):
        task = make_task(task, seed=seed, image_size=image_size, **{**DEFAULT_TASK_SIZES, **(task_sizes or {})})
    results = []
    for name, config in named:
        keep = str(Path(keep_models) / _safe_name(name)) if isinstance(keep_models, (str, Path)) else bool(keep_models)
        args = (name, config, task, budget, seed, recipes[name], options, progress, threads, keep)
        results.append(_run_isolated(args) if isolate else train_and_evaluate(*args))
    table = pd.DataFrame([r["row"] for r in results])
    table.attrs["loss_curves"] = {r["row"]["model"]: r["curve"] for r in results}
    table.attrs["task"] = task.name
    table.attrs["peak_memory"] = "ru_maxrss of the process that trained the model" + (
        " (one fresh process per model)" if isolate else " (shared process: a running maximum)")
    figures = comparison_figures(table, table.attrs["loss_curves"], task_name=task.name)
    if out is not None:
        write_results(out, table, figures, [r["config"] for r in results])
    if print_table:
        print_comparison(table)
    models = {r["row"]["model"]: _restore(r["model"]) for r in results if r["model"] is not None}
    return Comparison(table, figures, models=models, configs=dict(named), recipes=recipes, options=options, task=task,
                      budget=budget, seed=seed)


def _restore(kept: Any) -> Any:
    """A kept model: the Model itself, a Model rebuilt from returned weights, or a folder Path."""
    if isinstance(kept, dict):
        from .model import Model

        model = Model(kept["config"])
        model.load_state_dict(kept["state_dict"])
        return model.eval()
    return Path(kept) if isinstance(kept, str) else kept


def write_results(out: str | Path, table, figures: Mapping[str, Any], configs: list[dict[str, Any]]) -> Path:
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    curves = [
        pd.DataFrame({"model": name, **curve}) for name, curve in table.attrs.get("loss_curves", {}).items()
    ]
    if curves:
        pd.concat(curves).to_csv(out / "loss_curves.csv", index=False)
    (out / "configs.json").write_text(json.dumps(configs, indent=2))
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png", dpi=120)
    return out


def print_comparison(table, console=None) -> None:
    """The comparison as a rich table (parameters in millions, accuracy as percentages)."""
    from rich.table import Table

    console = console or wide_console()
    title = f"vlmzoo compare: {table.attrs.get('task', '')}"
    rich_table = Table(title=title, caption=f"peak RSS: {table.attrs.get('peak_memory', 'ru_maxrss')}")
    columns = [c for c in TABLE_COLUMNS if c in table.columns]
    for c in columns:
        rich_table.add_column(TABLE_COLUMNS[c], justify="left" if c in ("model", "family") else "right",
                              no_wrap=c == "model")
    for _, row in table.iterrows():
        rich_table.add_row(*(_format_cell(c, row[c]) for c in columns))
    console.print(rich_table)


def wide_console():
    """A rich Console; when output is piped (CI logs, files), 160 columns instead of rich's 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal or console.is_jupyter else Console(width=160)


def _format_cell(column: str, value: Any) -> str:
    if column in ("params_total", "params_trainable"):
        return f"{value / 1e6:.2f}M"
    if column in ("accuracy", "chance_accuracy"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)
