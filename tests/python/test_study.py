"""Specifications of `compare` as a study: seeds aggregate to mean and spread, learning curves sit at
the stated training FLOPs, resume skips finished runs, the report names pairs by its stated rule."""
import importlib

import pandas as pd
import pytest

import vlmzoo
from vlmzoo.cli import build_parser
from vlmzoo.study.compare import _training_budget, compare, curve_steps, pretraining_flops
from vlmzoo.data import make_task
from vlmzoo.study.report import RULE, separability, summarize, write_report

compare_module = importlib.import_module("vlmzoo.study.compare")


def per_seed_rows(accuracies: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"task": "shapes", "model": model, "seed": seed, "family": "llava", "image_path": "visual tokens",
         "trained": "abstractor+llm", "visual_tokens_per_image": 64,
         "train_gflops": 10.0, "pretrain_gflops": 0.0, "steps": 5, "chance_accuracy": 0.4, "accuracy": a,
         "accuracy_count": a / 2, "wall_time_s": 1.0 + seed}
        for model, values in accuracies.items() for seed, a in enumerate(values)
    ])


def test_seeds_aggregate_to_mean_sample_std_and_range():
    summary = summarize(per_seed_rows({"a": [0.5, 0.6, 0.7], "b": [0.4, 0.4, 0.4]}))
    a = summary.set_index("model").loc["a"]
    assert a["seeds"] == 3
    assert a["accuracy"] == pytest.approx(0.6)
    assert a["accuracy_std"] == pytest.approx(0.1)  # sample std (ddof=1) of 0.5, 0.6, 0.7
    assert (a["accuracy_min"], a["accuracy_max"]) == pytest.approx((0.5, 0.7))
    assert a["accuracy_count"] == pytest.approx(0.3) and a["accuracy_count_std"] == pytest.approx(0.05)
    assert a["wall_time_s"] == pytest.approx(2.0)
    assert list(summary["model"]) == ["a", "b"]


def test_separability_follows_the_stated_rule():
    # a: 0.70 ± 0.01, b: 0.60 ± 0.01 -> gap 0.10 > 0.02: ahead. c: 0.62 ± 0.05 vs b: gap 0.02 < 0.06: not separable.
    summary = summarize(per_seed_rows({"a": [0.69, 0.70, 0.71], "b": [0.59, 0.60, 0.61], "c": [0.57, 0.62, 0.67]}))
    verdict = separability(summary)
    assert {(a, b) for a, b, *_ in verdict["ahead"]} == {("a", "b"), ("a", "c")}
    assert {(a, b) for a, b, *_ in verdict["not_separable"]} == {("c", "b")}
    one_seed = summarize(per_seed_rows({"a": [0.9], "b": [0.1]}))  # no spread, no claim
    assert separability(one_seed)["ahead"] == []


def test_report_names_ahead_and_inseparable_pairs(tmp_path):
    summary = summarize(per_seed_rows({"a": [0.69, 0.70, 0.71], "b": [0.59, 0.60, 0.61], "c": [0.57, 0.62, 0.67]}))
    text = write_report(tmp_path, summary, {"learning_curves_shapes": None}).read_text()
    assert RULE in text
    ahead, inseparable = text.split("Not separable")
    assert "**a** ahead of **b**" in ahead and "**a** ahead of **c**" in ahead and "of **b**" not in ahead.replace(
        "**a** ahead of **b**", "")
    assert "c vs b" in inseparable
    assert "![learning_curves_shapes](learning_curves_shapes.png)" in text
    assert "| a | visual tokens | abstractor+llm | 64 | 10 | 0 | 5 | 3 | 70.0 ± 1.0 | 69.0-71.0 | 40.0 | n/a | n/a | n/a |" in text


def test_curve_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert curve_steps(100, 5) == [20, 40, 60, 80, 100]
    assert curve_steps(7, 3) == [2, 5, 7]
    assert curve_steps(2, 5) == [1, 2]
    assert curve_steps(10, 0) == []


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=16, n_val=0, n_test=6)


class CountingTrainings:
    def __init__(self, monkeypatch):
        self.runs = []
        real = compare_module.train_and_evaluate

        def counted(name, config, task, budget, seed, *args):
            self.runs.append((name, seed, budget))
            return real(name, config, task, budget, seed, *args)

        monkeypatch.setattr(compare_module, "train_and_evaluate", counted)


def small_compare(task, **kwargs):
    return compare(["llava-1.5-tiny"], task=task, budget=kwargs.pop("budget", 4), batch_size=2, curve_points=2,
                   curve_examples=6, isolate=False, progress=False, print_table=False, **kwargs)


def test_learning_curves_are_measured_at_the_stated_training_flops(task):
    comparison = small_compare(task, seeds=2)
    table, points = comparison.table, comparison.points
    assert list(table["seed"]) == [0, 1]
    for _, row in table.iterrows():
        own = points[points["seed"] == row["seed"]]
        assert list(own["step"]) == [2, 4]  # 2 points evenly spaced in 4 steps, the last at the end
        per_step = row["train_gflops"] / row["steps"]
        assert list(own["gflops"]) == pytest.approx([2 * per_step, 4 * per_step])
        assert own["accuracy"].iloc[-1] == pytest.approx(row["accuracy"])  # subset = whole test split here
    assert comparison.summary["accuracy"].iloc[0] == pytest.approx(table["accuracy"].mean())
    assert set(comparison.figures) >= {"learning_curves_shapes", "accuracy_per_kind_shapes",
                                       "accuracy_vs_visual_tokens_shapes"}


def test_resume_trains_only_the_runs_not_yet_in_the_folder(task, tmp_path, monkeypatch):
    counter = CountingTrainings(monkeypatch)
    small_compare(task, seeds=1, out=tmp_path, budget=2)
    assert [(n, s) for n, s, _ in counter.runs] == [("llava-1.5-tiny", 0)]
    resumed = small_compare(task, seeds=2, out=tmp_path, resume=True, budget=2)
    assert [(n, s) for n, s, _ in counter.runs[1:]] == [("llava-1.5-tiny", 1)]
    assert (resumed.table.attrs["runs_trained"], resumed.table.attrs["runs_reused"]) == (1, 1)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2 and (tmp_path / "report.md").is_file()
    small_compare(task, seeds=2, out=tmp_path, resume=True, budget=1)  # other settings: nothing reused
    assert len(counter.runs) == 4


def test_pretraining_flops_are_reported_and_charged_to_a_flops_budget(task, monkeypatch):
    assert pretraining_flops(vlmzoo.resolve_config("llava-1.5-tiny")) == 0  # no "from" slot (or no vlmzoo.towers)
    assert _training_budget("m", "1e12flops", 4 * 10**11, charge=False) == "1e12flops"
    assert _training_budget("m", "1e12flops", 4 * 10**11, charge=True) == f"{6 * 10**11}flops"
    with pytest.raises(ValueError, match="needs a budget in FLOPs"):
        _training_budget("m", 300, 1, charge=True)
    with pytest.raises(ValueError, match="uses the whole budget"):
        _training_budget("m", "1e12flops", 10**12, charge=True)
    monkeypatch.setattr(compare_module, "pretraining_flops", lambda config: 30 * 10**9)
    counter = CountingTrainings(monkeypatch)
    per_step = small_compare(task, seeds=1, budget="2steps").table["train_gflops"].iloc[0] / 2 * 1e9
    charged = small_compare(task, seeds=1, budget=f"{int(3 * per_step + 30e9)}flops", count_pretraining=True)
    assert counter.runs[-1][2] == f"{int(3 * per_step)}flops"
    assert charged.table["steps"].iloc[0] == 3
    assert charged.table["pretrain_gflops"].iloc[0] == pytest.approx(30.0)


def test_compare_flags_parse():
    args = build_parser().parse_args(["compare", "--seeds", "4", "--task", "digits", "--count-pretraining",
                                      "--resume", "--workers", "2", "--threads", "1", "--curve-points", "3"])
    assert (args.seeds, args.task, args.count_pretraining, args.resume, args.workers, args.threads,
            args.curve_points, args.full) == (4, "digits", True, True, 2, 1, 3, False)
    assert build_parser().parse_args(["compare", "--full"]).full


def test_full_runs_both_tasks_with_more_seeds(monkeypatch, tmp_path):
    seen = {}

    class Result:
        table = pd.DataFrame()

    Result.table.attrs.update(runs_trained=0, runs_reused=0, wall_time_s=0.0)
    monkeypatch.setattr(compare_module, "compare", lambda configs, **kw: seen.update(kw) or Result())
    from vlmzoo.cli import main

    assert main(["compare", "--full", "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["task"] == list(compare_module.FULL_TASKS) and seen["seeds"] == compare_module.FULL_SEEDS
    assert main(["compare", "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["task"] == compare_module.DEFAULT_TASK and seen["seeds"] == compare_module.DEFAULT_SEEDS >= 3
