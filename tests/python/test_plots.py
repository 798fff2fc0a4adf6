"""The comparison figures say what the numbers say: no marker hides another, no log axis over a
narrow range, smoothed loss curves end where the loss ends."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vlmzoo.study.plots import accuracy_vs_train_flops, accuracy_vs_visual_tokens, comparison_figures, smooth


def drawn(figure):
    FigureCanvasAgg(figure).draw()
    return figure


def marker_centres(figure) -> np.ndarray:
    """Display (pixel) positions of every scatter marker of the figure's first axes."""
    ax = figure.axes[0]
    return np.concatenate([c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections])


def min_pairwise_distance(points: np.ndarray) -> float:
    return min(np.hypot(*(points[i] - points[j])) for i in range(len(points)) for j in range(i + 1, len(points)))


def table(tokens, gflops, accuracy):
    return pd.DataFrame({"model": [f"model-{i}" for i in range(len(tokens))], "visual_tokens_per_image": tokens,
                         "train_gflops": gflops, "accuracy": accuracy, "chance_accuracy": [0.4] * len(tokens)})


def test_models_sharing_a_token_count_and_accuracy_stay_visible():
    # Three models with 64 visual tokens and the same accuracy: three separate markers.
    figure = drawn(accuracy_vs_visual_tokens(table([64, 64, 64, 16], [1, 1, 1, 1], [0.5, 0.5, 0.5, 0.5])))
    centres = marker_centres(figure)
    assert len(centres) == 4
    marker_diameter_px = math.sqrt(60) * figure.dpi / 72  # s=60 points^2
    assert min_pairwise_distance(centres) >= marker_diameter_px
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["16", "64"]  # one column per distinct count


def test_flops_axis_over_a_narrow_range_is_linear_with_plain_ticks():
    # Equal-FLOPs budgets land within 1% of each other.
    figure = drawn(accuracy_vs_train_flops(table([16, 64, 64], [481.2, 483.9, 485.6], [0.5, 0.55, 0.6])))
    ax = figure.axes[0]
    assert ax.get_xscale() == "linear"
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and not any("10^" in s or "e+" in s or "\\times" in s for s in labels)
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_flops_axis_over_decades_is_logarithmic():
    figure = drawn(accuracy_vs_train_flops(table([16, 64], [3.0, 900.0], [0.5, 0.6])))
    assert figure.axes[0].get_xscale() == "log"


def test_equal_flops_and_accuracy_markers_stay_visible():
    figure = drawn(accuracy_vs_train_flops(table([16, 64, 64], [481.0, 481.0, 481.5], [0.5, 0.5, 0.505])))
    assert min_pairwise_distance(marker_centres(figure)) >= math.sqrt(60) * figure.dpi / 72


def noisy_decay(steps: int, seed: int = 0):
    t = np.arange(steps, dtype=np.float64)
    trend = 1.0 + 5.0 * np.exp(-t / (steps / 4))
    return trend, trend + np.random.default_rng(seed).normal(0, 0.1, steps)


@pytest.mark.parametrize("steps", [20, 300])
def test_smoothed_loss_ends_at_the_raw_loss(steps):
    trend, raw = noisy_decay(steps)
    smoothed = smooth(raw)
    assert len(smoothed) == steps
    # Within the noise of the last steps, not several steps behind a falling curve.
    assert abs(smoothed[-1] - trend[-1]) < 0.25
    assert abs(smoothed[0] - trend[0]) < 0.5


def test_smoothing_removes_noise_on_long_runs():
    trend, raw = noisy_decay(300)
    middle = slice(50, 250)
    assert np.std(np.asarray(smooth(raw))[middle] - trend[middle]) < 0.5 * np.std(raw[middle] - trend[middle])


def test_short_runs_are_not_smoothed():
    _, raw = noisy_decay(20)
    assert smooth(raw) == pytest.approx(list(raw))


def test_comparison_figures_render_to_png():
    curves = {f"model-{i}": {"gflops": list(np.linspace(1, 480, 30)), "loss": list(noisy_decay(30, i)[1])}
              for i in range(3)}
    figures = comparison_figures(table([16, 64, 64], [480.0, 481.0, 482.0], [0.5, 0.5, 0.6]), curves, "shapes")
    assert set(figures) == {"accuracy_vs_visual_tokens", "accuracy_vs_train_flops", "loss_curves"}
    for figure in figures.values():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue()[:4] == b"\x89PNG"


def test_loss_curves_keep_each_model_s_colour_name_the_task_and_say_the_seed():
    # Curves arrive in another order than the table's models: each keeps the colour the other figures give it.
    curves = {f"model-{i}": {"gflops": list(np.linspace(1, 480, 30)), "loss": list(noisy_decay(30, i)[1]), "seed": 3}
              for i in (2, 0, 1)}
    figures = comparison_figures(table([16, 64, 64], [480.0, 481.0, 482.0], [0.5, 0.5, 0.6]), curves, "digits")
    ax = figures["loss_curves"].axes[0]
    scatter = figures["accuracy_vs_visual_tokens"].axes[0]
    colour_of = {c.get_label(): tuple(c.get_facecolor()[0][:3]) for c in scatter.collections if c.get_label()}
    from matplotlib.colors import to_rgb

    lines = {line.get_label(): to_rgb(line.get_color()) for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {f"model-{i} (seed 3)" for i in range(3)}
    for i in range(3):
        assert lines[f"model-{i} (seed 3)"] == pytest.approx(colour_of[f"model-{i}"])
    assert "digits" in ax.get_title()
