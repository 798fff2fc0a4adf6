"""Figures of a comparison: accuracy against visual tokens and against training compute, loss curves."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

# Figure objects without pyplot: no GUI backend, no global state, and Jupyter still displays them.
from matplotlib.figure import Figure

LOSS_SMOOTHING = 0.9  # exponential moving average: per-step loss on 32 examples is noisy


def smooth(values: Sequence[float], factor: float = LOSS_SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average (as TensorBoard draws it)."""
    out, average = [], 0.0
    for i, v in enumerate(values, start=1):
        average = factor * average + (1 - factor) * v
        out.append(average / (1 - factor**i))
    return out


def _accuracy_scatter(table, x: str, xlabel: str, title: str, log_x: bool = False) -> Figure:
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    for i, (_, row) in enumerate(table.iterrows()):
        ax.scatter(row[x], 100 * row["accuracy"], s=60, color=f"C{i}", label=row["model"], zorder=3)
    if "chance_accuracy" in table and len(table):
        ax.axhline(100 * table["chance_accuracy"].iloc[0], color="gray", linestyle="--", label="chance (majority answer)")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return figure


def loss_curves_figure(curves: Mapping[str, Mapping[str, list[float]]], x: str = "gflops") -> Figure:
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        ax.plot(curve[x], curve["loss"], color=f"C{i}", alpha=0.2, linewidth=0.8)
        ax.plot(curve[x], smooth(curve["loss"]), color=f"C{i}", label=name)
    losses = [v for curve in curves.values() for v in curve["loss"]]
    # Log scale spreads the long tail; over a near-flat range (a 1-step run) matplotlib's log limits break.
    wide = bool(losses) and min(losses) > 0 and max(losses) > 1.5 * min(losses)
    ax.set(xlabel="training GFLOPs" if x == "gflops" else x, ylabel="training loss", title="loss curves",
           yscale="log" if wide else "linear")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def comparison_figures(table, curves: Mapping[str, Mapping[str, list[float]]], task_name: str = "") -> dict[str, Any]:
    """{file stem: Figure} for a comparison table and its loss curves."""
    suffix = f" ({task_name})" if task_name else ""
    return {
        "accuracy_vs_visual_tokens": _accuracy_scatter(
            table, "visual_tokens_per_image", "visual tokens per image", "accuracy vs visual tokens" + suffix),
        "accuracy_vs_train_flops": _accuracy_scatter(
            table, "train_gflops", "training GFLOPs", "accuracy vs training compute" + suffix, log_x=True),
        "loss_curves": loss_curves_figure(curves),
    }
