"""`vlmzoo.compare`: train and evaluate several architectures on the same data and budget, side by side."""
from __future__ import annotations

import json
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from .data import Task, make_task
from .initialize import INIT_STD
from .presets import resolve_config

DEFAULT_PRESET = "llava-1.5-tiny"
# The tiny LLaVA preset and variants that each differ from it in one slot.
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "llava-tiny": {},  # MLP projector, features of layer -2, CLIP-style ViT
    "llava-tiny/linear": {"abstractor": {"kind": "linear"}},
    "llava-tiny/layer-1": {"vision": {"feature_layers": -1}},
    # "full": SigLIP has no CLS, and "default" would drop a real patch (as transformers does).
    "llava-tiny/siglip": {"vision": {"style": "siglip", "select": "full"}},
}
# Other families' tiny presets, run beside the LLaVA set (each differs from it in several slots).
DEFAULT_OTHER_PRESETS = ["blip2-opt-tiny"]
# Sized so the four LLaVA runs end in under 10 minutes on 2 CPU cores (the tiny BLIP-2 adds its own); see the module test.
DEFAULT_TASK_SIZES = {"n_train": 6000, "n_val": 0, "n_test": 400}
DEFAULT_BUDGET = "1.1e13flops"  # about 225 steps of 32 for the tiny preset
# Recipe for from-scratch tiny models: LLaVA's stage 2 (projector + LLM; the vision tower frozen).
# A frozen, well-initialised random ViT is a stable random-feature extractor; training it too, or
# only the projector (stage 1), stays at chance within a CPU budget (measured, see the issue note).
# A quarter of each epoch is the task's template captions: a denser image-grounded signal.
# lr 1e-3: the tiny MLP-projector LLaVA reached 53.5% on shapes (chance 42.8%) vs 40.8% at 3e-3.
DEFAULT_TRAIN = {"batch_size": 32, "lr": 1e-3, "trainable": "projector+llm", "caption_fraction": 0.25}
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
                       train_kwargs: dict[str, Any], progress: bool = True, init_std: float | None = INIT_STD,
                       threads: int | None = None) -> dict[str, Any]:
    """One row of the comparison: builds `config` to fit the task's tokenizer, initialises, trains, evaluates."""
    import torch

    from .evaluate import evaluate
    from .initialize import init_weights
    from .model import build
    from .train import task_overrides, train

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    rss_before = _peak_rss_mib()
    torch.manual_seed(seed)
    model = build(config, name=name, **task_overrides(config, task.tokenizer))
    if init_std is not None:
        init_weights(model, std=init_std, seed=seed)
    result = train(model, task, budget, seed=seed, progress=progress, desc=name, **train_kwargs)
    evaluation = evaluate(model, task, "test")
    peak = _peak_rss_mib()
    row = {
        "model": name,
        "family": model.config["family"],
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
    return {"row": row, "curve": curve, "config": model.config}


def compare(
    configs: Sequence[str | Mapping[str, Any]] | None = None,
    task: str | Task = "shapes",
    budget: int | str = DEFAULT_BUDGET,
    out: str | Path | None = None,
    seed: int = 0,
    *,
    task_sizes: Mapping[str, int] | None = None,
    image_size: int = 64,
    batch_size: int = DEFAULT_TRAIN["batch_size"],
    lr: float = DEFAULT_TRAIN["lr"],
    trainable: str | Sequence[str] = DEFAULT_TRAIN["trainable"],
    caption_fraction: float = DEFAULT_TRAIN["caption_fraction"],
    init_std: float | None = INIT_STD,
    threads: int | None = None,
    isolate: bool = True,
    progress: bool = True,
    print_table: bool = True,
):
    """Trains and evaluates every config on the same task, data order and budget.

    configs: preset names, JSON paths or dicts; None compares the tiny LLaVA preset with its
      one-slot variants (linear projector, feature layer -1, SigLIP-style vision), and the tiny BLIP-2.
    budget: steps (300, "300steps") or training FLOPs ("8e12flops"): at equal FLOPs a cheaper
      model takes more steps. trainable: slots to train (default "projector+llm", LLaVA's stage 2:
      the vision tower stays at its random init). init_std: every model is re-initialised N(0, init_std) as transformers does
      (None keeps libtorch's defaults, which learn far slower). threads: torch threads per model
      (None: torch's default). isolate: train each model in a fresh process, so its peak RSS is its own.
    Returns (DataFrame, {name: matplotlib Figure}); with `out`, writes results.csv,
    loss_curves.csv, configs.json and one PNG per figure there.
    """
    import pandas as pd

    from .plots import comparison_figures

    from .train import parse_budget

    # Check configs and budget before generating data, so a typo fails in a second.
    named = _named_configs(default_configs() if configs is None else list(configs))
    parse_budget(budget, flops_per_step=1.0)
    if isinstance(task, str):
        task = make_task(task, seed=seed, image_size=image_size, **{**DEFAULT_TASK_SIZES, **(task_sizes or {})})
    train_kwargs = {"batch_size": batch_size, "lr": lr, "trainable": trainable, "caption_fraction": caption_fraction}
    results = []
    for name, config in named:
        args = (name, config, task, budget, seed, train_kwargs, progress, init_std, threads)
        if isolate:
            # A fresh process per model: ru_maxrss never goes down, so a shared process would report the max so far.
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                results.append(pool.submit(train_and_evaluate, *args).result())
        else:
            results.append(train_and_evaluate(*args))
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
    return table, figures


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
