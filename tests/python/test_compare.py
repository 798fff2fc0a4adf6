"""Specifications of evaluation and `vlmzoo.compare`: exact-match scoring, the default set, files written."""
import pandas as pd
import pytest
import torch

import vlmzoo
from vlmzoo.study.compare import DEFAULT_PRESET, FULL_TRAINING_VARIANTS, TABLE_COLUMNS, compare, default_configs
from vlmzoo.study.design import image_path, trained_slots
from vlmzoo.data import make_task
from vlmzoo.training.evaluate import evaluate
from vlmzoo.training.train import task_overrides


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=32, n_val=0, n_test=24)


class Oracle:
    """Wraps a model but answers every question right (or wrong), in test-split order."""

    def __init__(self, model, answers, tokenizer, wrong=False):
        self._model, self._answers, self._tokenizer, self._wrong = model, list(answers), tokenizer, wrong

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, input_ids, max_new_tokens, eos_token_id, **_):
        rows = []
        for _ in range(input_ids.size(0)):
            answer = "purple" if self._wrong else self._answers.pop(0)
            ids = (self._tokenizer.encode(answer) + [eos_token_id] * max_new_tokens)[:max_new_tokens]
            rows.append(ids)
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


def tiny_model(task):
    config = vlmzoo.resolve_config(DEFAULT_PRESET)
    return vlmzoo.build(config, **task_overrides(config, task.tokenizer))


def test_evaluation_scores_exact_matches_per_kind_and_overall(task):
    right = evaluate(Oracle(tiny_model(task), [e.answer for e in task.test], task.tokenizer), task, batch_size=5)
    assert right.accuracy == {k: 1.0 for k in right.accuracy}
    assert set(right.accuracy) == {*(e.kind for e in task.test), "all"}
    assert sum(n for k, n in right.counts.items() if k != "all") == right.counts["all"] == len(task.test)
    wrong = evaluate(Oracle(tiny_model(task), [], task.tokenizer, wrong=True), task)
    purple = sum(e.answer == "purple" for e in task.test) / len(task.test)
    assert wrong.overall == pytest.approx(purple)


def test_evaluation_of_a_real_model_decodes_greedy_answers(task):
    evaluation = evaluate(tiny_model(task), task, max_examples=8)
    assert evaluation.counts["all"] == 8
    assert all(set(p) == {"question", "answer", "prediction", "kind", "correct"} for p in evaluation.predictions)
    assert 0.0 <= evaluation.overall <= 1.0


def test_the_default_set_is_the_micro_llava_and_variants_differing_in_one_slot():
    base, *variants = [c for c in default_configs() if c["family"] == "llava"]
    assert base["family"] == "llava"
    assert base == {**vlmzoo.resolve_config(DEFAULT_PRESET), "name": base["name"]}
    for variant in variants:
        differing = [slot for slot in ("vision", "abstractor", "fusion", "llm") if variant[slot] != base[slot]]
        assert len(differing) == 1, (variant["name"], differing)


def test_the_default_set_holds_one_micro_preset_of_every_other_family_and_full_adds_the_tiny_presets():
    others = {c["family"]: c["name"] for c in default_configs() if c["family"] != "llava"}
    assert others == {"blip2": "blip2-opt-micro", "flamingo": "flamingo-micro", "fuyu": "fuyu-micro",
                      "beit3": "beit3-micro"}
    assert {image_path(c) for c in default_configs()} == {
        "visual tokens", "cross-attention", "raw patches", "joint encoder"}
    full = [c["name"] for c in default_configs(full=True)]
    assert full[: len(default_configs())] == [c["name"] for c in default_configs()]
    assert {"llava-1.5-tiny", "blip2-opt-tiny"} <= set(full)


def test_the_micro_presets_share_one_language_model_size():
    # The decoder families are compared at equal LM width and depth and 16 visual tokens per image, so the
    # way the image gets in is what differs (BEiT-3's one encoder is as wide, deeper: it is vision and LM at once).
    llava = vlmzoo.resolve_config("llava-1.5-micro")
    for name in ("blip2-opt-micro", "flamingo-micro", "fuyu-micro"):
        other = vlmzoo.resolve_config(name)
        assert (other["llm"]["hidden"], other["llm"]["layers"]) == (llava["llm"]["hidden"], llava["llm"]["layers"])
        assert vlmzoo.visual_tokens_per_image(other) == vlmzoo.visual_tokens_per_image(llava) == 16, name
    assert vlmzoo.resolve_config("beit3-micro")["llm"]["hidden"] == llava["llm"]["hidden"]


def test_a_row_names_how_the_model_sees_the_image_and_the_slots_that_held_trained_weights():
    assert trained_slots(["vision.w", "abstractor.w", "llm.w"], ("abstractor", "fusion", "llm")) == "abstractor+llm"
    assert trained_slots(["vision.w"], ("llm",)) == "none"
    assert trained_slots(["abstractor.w", "llm.w"], ("abstractor", "llm"), lora=True) == "abstractor+llm (LoRA)"


def test_the_full_set_adds_the_micro_llava_with_its_lm_trained_by_lora_not_the_default_set():
    assert "llava-micro/lora" in FULL_TRAINING_VARIANTS
    assert "llava-micro/lora" not in [c["name"] for c in default_configs()]
    lora = next(c for c in default_configs(full=True) if c["name"] == "llava-micro/lora")
    assert lora == {**vlmzoo.resolve_config(DEFAULT_PRESET), "name": "llava-micro/lora"}  # the same model


def test_the_lora_row_trains_the_same_model_with_lora_at_the_same_flops(task):
    configs = [c for c in default_configs(full=True) if c["name"] in ("llava-micro", "llava-micro/lora")]
    comparison = compare(configs, task=task, budget="3e9flops", seeds=1, batch_size=4, curve_points=0,
                         progress=False, print_table=False, isolate=False)
    rows = comparison.table.set_index("model")
    full, lora = rows.loc["llava-micro"], rows.loc["llava-micro/lora"]
    assert (full["trained"], lora["trained"]) == ("abstractor+llm", "abstractor+llm (LoRA)")
    assert "+lora" in lora["recipe"] and "+lora" not in full["recipe"]
    assert lora["params_total"] == full["params_total"]  # the adapters are merged: the same model
    assert lora["params_trainable"] < full["params_trainable"]
    # equal FLOPs: a LoRA step is cheaper, so it takes more of them; both stay within the budget
    assert lora["steps"] > full["steps"] and max(lora["train_gflops"], full["train_gflops"]) <= 3
    assert comparison.recipes["llava-micro/lora"].lora == {}


def test_compare_runs_end_to_end_and_writes_csv_and_png(task, tmp_path):
    comparison = compare([DEFAULT_PRESET, {**vlmzoo.load_config(DEFAULT_PRESET), "abstractor": {"kind": "linear"},
                                           "name": "linear"}],
                         task=task, budget=2, out=tmp_path, seeds=1, batch_size=4, curve_points=1, progress=False,
                         print_table=False)
    table, figures = comparison
    assert list(table["model"]) == [DEFAULT_PRESET, "linear"]
    assert set(TABLE_COLUMNS) <= set(comparison.summary.columns)
    assert (table["steps"] == 2).all()
    assert (table["peak_rss_mib"] > 0).all()
    assert table["chance_accuracy"].iloc[0] == pytest.approx(task.chance_accuracy["all"])
    written = pd.read_csv(tmp_path / "results.csv")
    assert list(written["model"]) == list(table["model"])
    assert set(figures) == {f"{name}_shapes" for name in ("learning_curves", "accuracy_vs_visual_tokens",
                                                          "accuracy_per_kind", "loss_curves")}
    for name in figures:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    curves = pd.read_csv(tmp_path / "loss_curves.csv")
    assert len(curves) == 4
    # The loss column says it is a mean over the last steps (both steps here), not the last step's loss.
    assert "final_loss" not in table.columns
    for model, group in curves.groupby("model"):
        row = table[table["model"] == model].iloc[0]
        assert row["mean_loss_last_10_steps"] == pytest.approx(group["loss"].mean())
        assert (group["seed"] == row["seed"]).all()
    assert len(pd.read_csv(tmp_path / "summary.csv")) == 2
    assert len(pd.read_csv(tmp_path / "learning_curves.csv")) == 2  # one point per run: the end
    assert "## Task `shapes`" in (tmp_path / "report.md").read_text()


def test_compare_checks_configs_and_budget_before_training(task):
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        compare(["nope"], task=task, budget=1, print_table=False)
    with pytest.raises(ValueError, match="budget"):
        compare([DEFAULT_PRESET], task=task, budget="soon", print_table=False)


def test_a_worker_process_reports_its_own_peak_memory_not_its_parents():
    # Linux hands a parent's ru_maxrss to a child started by fork + exec; compare's workers are such children.
    import os
    import subprocess
    import sys

    ballast = bytearray(1500 * 2**20)
    ballast[:: 4096] = b"\x01" * len(ballast[:: 4096])  # touch every page: 1.5 GiB resident here
    code = "from vlmzoo.study.compare import _peak_rss_mib; print(_peak_rss_mib())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # finds vlmzoo as we do
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert child.returncode == 0, child.stderr[-2000:]
    assert float(child.stdout) < 1000, child.stdout  # importing vlmzoo (torch) takes ~300 MiB
    del ballast
