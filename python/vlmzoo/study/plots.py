"""Figures of a comparison: learning curves (accuracy against training compute, mean and spread over
seeds), accuracy against visual tokens and per question kind, loss curves.

Markers that would land on one another are moved sideways (in display points, so no value
changes) and every marker has its own shape; visual-token counts are categories (they are a few
design choices, often shared); an axis is logarithmic only when its values span a decade.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # Figure objects without pyplot: no GUI backend, no global state
from matplotlib.ticker import ScalarFormatter
from matplotlib.transforms import offset_copy

SMOOTHING_FRACTION = 0.05  # moving-average window as a share of the run: 20 steps -> none, 300 -> 15
MARKERS = "osD^vP*Xph<>"
DODGE_POINTS = 9.0  # sideways step between markers that share a place
LOG_MIN_RATIO = 10.0  # a log axis only over at least one decade


def smoothing_window(steps: int, fraction: float = SMOOTHING_FRACTION) -> int:
    """Odd moving-average window proportional to the run length (1 = no smoothing)."""
    window = int(round(steps * fraction))
    return max(1, window if window % 2 else window - 1)


def smooth(values: Sequence[float], window: int | None = None) -> list[float]:
    """Centred moving average over `window` steps (default: proportional to the run), shrinking at
    the ends to the steps that exist; it follows the curve to its last step instead of lagging."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return []
    window = smoothing_window(x.size) if window is None else max(1, int(window))
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(x)])
    index = np.arange(x.size)
    lo, hi = np.maximum(0, index - half), np.minimum(x.size, index + half + 1)
    return ((sums[hi] - sums[lo]) / (hi - lo)).tolist()


def is_wide(values: Sequence[float], ratio: float = LOG_MIN_RATIO) -> bool:
    """True when positive values span at least `ratio` (worth a log axis)."""
    v = [x for x in values if x == x]  # drop NaN
    return bool(v) and min(v) > 0 and max(v) >= ratio * min(v)


def dodge_slots(xs: Sequence[float], ys: Sequence[float], x_tolerance: float, y_tolerance: float) -> list[float]:
    """For each point, its sideways slot (..., -1, -0.5, 0, 0.5, 1, ...) among the points it would hide:
    points closer than the tolerances on both axes form one group, centred on the shared place."""
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        for group in groups:
            j = group[0]
            if abs(xs[j] - x) <= x_tolerance and abs(ys[j] - y) <= y_tolerance:
                group.append(i)
                break
        else:
            groups.append([i])
    slots = [0.0] * len(xs)
    for group in groups:
        for k, i in enumerate(group):
            slots[i] = k - (len(group) - 1) / 2
    return slots


def _plain_ticks(axis) -> None:
    # No "x10^2" or "+4.81e2" offsets: a narrow range reads as its own numbers.
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def _scatter(ax, figure: Figure, xs: list[float], ys: list[float], names: list[str], slots: list[float],
             yerr: Sequence[float] | None = None) -> None:
    for i, (x, y, name, slot) in enumerate(zip(xs, ys, names, slots)):
        transform = offset_copy(ax.transData, fig=figure, x=slot * DODGE_POINTS, y=0.0, units="points")
        if yerr is not None and yerr[i] == yerr[i]:  # NaN (one seed): no bar
            ax.errorbar(x, y, yerr=yerr[i], color=f"C{i % 10}", capsize=3, linewidth=1, zorder=2, transform=transform)
        ax.scatter(x, y, s=60, color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=name, zorder=3,
                   transform=transform, edgecolors="black", linewidths=0.5)


def _accuracy_axes(table, title: str):
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    if "chance_accuracy" in table and len(table):
        ax.axhline(100 * table["chance_accuracy"].iloc[0], color="gray", linestyle="--", label="chance (majority answer)")
    ax.set(ylabel="test accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    return figure, ax


def accuracy_vs_visual_tokens(table, title: str = "accuracy vs visual tokens") -> Figure:
    """One column per distinct visual-token count; models sharing a count stand side by side. A
    summary table (with accuracy_std) gets error bars of one std over seeds."""
    figure, ax = _accuracy_axes(table, title)
    counts = [int(c) for c in table["visual_tokens_per_image"]]
    categories = sorted(set(counts))
    xs = [float(categories.index(c)) for c in counts]
    ys = [100 * float(a) for a in table["accuracy"]]
    slots = dodge_slots(xs, ys, x_tolerance=0.0, y_tolerance=float("inf"))  # every model of a column apart
    yerr = [100 * float(e) for e in table["accuracy_std"]] if "accuracy_std" in table else None
    _scatter(ax, figure, xs, ys, list(table["model"]), slots, yerr)
    if yerr is not None:
        ax.set_title(f"{title}\n(bars: ± 1 std over seeds)", fontsize="medium")
    ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel("visual tokens per image")
    ax.legend(fontsize="small", loc="lower right")
    return figure


def accuracy_vs_train_flops(table, title: str = "accuracy vs training compute") -> Figure:
    """Accuracy against training GFLOPs: log x only over a decade or more, plain ticks otherwise."""
    figure, ax = _accuracy_axes(table, title)
    xs = [float(x) for x in table["train_gflops"]]
    ys = [100 * float(a) for a in table["accuracy"]]
    wide = is_wide(xs)
    if wide:
        ax.set_xscale("log")
    position = np.log10(xs) if wide else np.asarray(xs, dtype=np.float64)
    span = float(position.max() - position.min()) if len(xs) else 0.0
    # Points within 3% of the x span (or of the value itself on a flat span) and 2 accuracy points overlap.
    x_tolerance = 0.03 * span if span > 0 else float("inf")
    slots = dodge_slots(list(position), ys, x_tolerance=x_tolerance, y_tolerance=2.0)
    _scatter(ax, figure, xs, ys, list(table["model"]), slots)
    if not wide:
        _plain_ticks(ax.xaxis)
    ax.set_xlabel("training GFLOPs")
    ax.legend(fontsize="small", loc="lower right")
    return figure


def loss_curves_figure(curves: Mapping[str, Mapping[str, Any]], x: str = "gflops", title: str = "loss curves",
                       order: Sequence[str] | None = None) -> Figure:
    """Raw per-step loss (faint) and its moving average (window proportional to the run), one run per model.
    order: the models in the order the other figures draw them, so each keeps its colour there (C0, C1, ...);
    a curve's "seed" (one run of each model: the first seed) is named in its legend entry."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    steps = max((len(c["loss"]) for c in curves.values()), default=0)
    window = smoothing_window(steps)
    order = list(order or [])
    order += [name for name in curves if name not in order]
    for name, curve in curves.items():
        color = f"C{order.index(name) % 10}"
        label = f"{name} (seed {curve['seed']})" if "seed" in curve else name
        ax.plot(curve[x], curve["loss"], color=color, alpha=0.25, linewidth=0.8)
        ax.plot(curve[x], smooth(curve["loss"], window), color=color, label=label)
    losses = [v for curve in curves.values() for v in curve["loss"]]
    # A log scale spreads a long tail; over a narrow range it only adds odd tick labels.
    ax.set(xlabel="training GFLOPs" if x == "gflops" else x, ylabel="training loss",
           title=f"{title}\n(moving average over {window} steps)" if window > 1 else title,
           yscale="log" if is_wide(losses) else "linear")
    _plain_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def comparison_figures(table, curves: Mapping[str, Mapping[str, list[float]]], task_name: str = "") -> dict[str, Any]:
    """{file stem: Figure} for a comparison table and its loss curves."""
    suffix = f" ({task_name})" if task_name else ""
    return {
        "accuracy_vs_visual_tokens": accuracy_vs_visual_tokens(table, "accuracy vs visual tokens" + suffix),
        "accuracy_vs_train_flops": accuracy_vs_train_flops(table, "accuracy vs training compute" + suffix),
        "loss_curves": loss_curves_figure(curves, title="loss curves" + suffix, order=list(table["model"])),
    }


def learning_curves_figure(points, title: str = "learning curves", chance: float | None = None) -> Figure:
    """Accuracy on the held-out curve subset against training GFLOPs, one line per model: the mean
    over seeds, shaded ± 1 std (none with one seed). points: rows of model, seed, gflops, accuracy."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    if chance is not None:
        ax.axhline(100 * chance, color="gray", linestyle="--", label="chance (majority answer)")
    for i, (name, group) in enumerate(points.groupby("model", sort=False)):
        by_x = group.groupby("gflops")["accuracy"]
        x = np.asarray(list(by_x.groups), dtype=np.float64)
        mean, std = 100 * by_x.mean().to_numpy(), 100 * by_x.std(ddof=1).fillna(0.0).to_numpy()
        seeds = group["seed"].nunique()
        color = f"C{i % 10}"
        ax.plot(x, mean, color=color, marker=MARKERS[i % len(MARKERS)], markersize=4, label=f"{name} (n={seeds})")
        if seeds > 1:
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
    ax.set(xlabel="training GFLOPs", ylabel="accuracy on the curve subset (%)", ylim=(0, 100),
           title=f"{title}\n(line: mean over seeds; shaded: ± 1 std)")
    _plain_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return figure


def accuracy_per_kind_figure(summary, chance: Mapping[str, float] | None = None,
                             title: str = "accuracy per question kind") -> Figure:
    """Grouped bars: one group per question kind, one bar per model (mean over seeds, ± 1 std
    whiskers), the kind's chance level as a dash."""
    kinds = sorted(c[len("accuracy_"):] for c in summary.columns
                   if c.startswith("accuracy_") and not c.endswith("_std") and c not in ("accuracy_min", "accuracy_max"))
    figure = Figure(figsize=(max(6.4, 1.6 * len(kinds) + 2), 4.2), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(1, len(summary))
    for i, row in enumerate(summary.itertuples(index=False)):
        values = [100 * float(getattr(row, f"accuracy_{k}")) for k in kinds]
        errors = [100 * float(getattr(row, f"accuracy_{k}_std", float("nan"))) for k in kinds]
        errors = [0.0 if e != e else e for e in errors]
        ax.bar(np.arange(len(kinds)) - 0.4 + (i + 0.5) * width, values, width, yerr=errors, capsize=2,
               color=f"C{i % 10}", label=row.model)
    for j, kind in enumerate(kinds):
        if chance and kind in chance:
            ax.hlines(100 * chance[kind], j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1,
                      label="chance" if j == 0 else None)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"{title}\n(bars: mean over seeds, ± 1 std)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def study_figures(summary, points, curves: Mapping[str, Mapping[str, list[float]]], task_name: str,
                  chance: Mapping[str, float] | None = None) -> dict[str, Any]:
    """{file stem: Figure} of one task of a study; stems end with the task's name."""
    suffix = f" ({task_name})"
    overall = (chance or {}).get("all")
    return {
        f"learning_curves_{task_name}": learning_curves_figure(points, "learning curves" + suffix, overall),
        f"accuracy_vs_visual_tokens_{task_name}": accuracy_vs_visual_tokens(summary,
                                                                            "accuracy vs visual tokens" + suffix),
        f"accuracy_per_kind_{task_name}": accuracy_per_kind_figure(summary, chance, "accuracy per question kind" + suffix),
        f"loss_curves_{task_name}": loss_curves_figure(curves, title="loss curves" + suffix,
                                                       order=list(summary["model"])),
    }
