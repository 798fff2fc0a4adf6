"""One training recipe: `train` and `compare` read it from vlmzoo.recipes, a compare row is rebuilt
by training alone, and `compare` works from a plain script and hands back the models it trained."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vlmzoo
from vlmzoo.study.compare import compare
from vlmzoo.data import make_task
from vlmzoo.training.evaluate import evaluate
from vlmzoo.models.model import SLOTS
from vlmzoo.training.recipes import RECIPES, recipe_for, settle
from vlmzoo.training.rows import model_for_task, train_for_task
from vlmzoo.training.train import train

PRESET = "llava-1.5-tiny"
PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=32, n_val=0, n_test=12)


def test_train_defaults_to_the_recipe_compare_uses(task):
    model = vlmzoo.build(PRESET)
    result = train(model, task, 1, batch_size=4, progress=False)
    scratch = RECIPES["llava"]["scratch"]
    assert recipe_for("llava") is scratch
    # One step is a short run: the recipe's short-run options apply, the rest is the recipe's.
    assert result.extra["recipe"] == {**scratch.as_dict(), **dict(scratch.short_run), "batch_size": 4,
                                      "name": "scratch-short"}
    assert result.trainable_slots == scratch.trainable == ("abstractor", "llm")


def test_short_budgets_take_the_short_run_options_unless_given():
    scratch = RECIPES["llava"]["scratch"]
    long, steps = settle(scratch, {}, lambda r: 225)
    assert long == scratch and steps == 225
    short, _ = settle(scratch, {}, lambda r: 20)
    assert (short.name, short.lr, short.caption_fraction) == ("scratch-short", 5e-3, 0.0)
    mine, _ = settle(scratch, {"lr": 5e-4}, lambda r: 20)
    assert (mine.lr, mine.caption_fraction) == (5e-4, 0.0)
    # A FLOPs budget is counted again with the short run's caption share.
    seen = []
    settle(scratch, {}, lambda r: seen.append(r.caption_fraction) or 20)
    assert seen == [0.25, 0.0]


def test_explicit_arguments_override_the_recipe(task):
    result = train(vlmzoo.build(PRESET), task, 1, batch_size=4, lr=5e-4, trainable="all", progress=False)
    assert result.extra["recipe"]["lr"] == 5e-4
    assert result.trainable_slots == SLOTS
    stage1 = train(vlmzoo.build(PRESET), task, 1, batch_size=4, recipe="stage1", progress=False)
    assert stage1.trainable_slots == ("abstractor",) and stage1.extra["recipe"]["name"] == "stage1"


def test_a_staged_recipe_reports_every_step_to_on_step_counted_across_stages(task):
    # compare's learning curves hang on on_step: a two-stage recipe must call it for all its steps.
    seen = []
    result = train(vlmzoo.build(PRESET), task, 4, recipe=RECIPES["llava"]["pretrained"], batch_size=2, progress=False,
                   on_step=lambda model, done, total: seen.append((done, total)))
    assert [s["steps"] for s in result.extra["stages"]] == [1, 3]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_an_unknown_recipe_is_named():
    with pytest.raises(ValueError, match=r"recipe 'fast' is not defined for family 'llava'; recipes: pretrained, scratch, stage1"):
        recipe_for("llava", "fast")


def test_a_compare_row_is_rebuilt_by_training_alone(task):
    comparison = compare([PRESET], task=task, budget=3, batch_size=4, isolate=False, keep_models=True,
                         progress=False, print_table=False)
    table, _ = comparison
    row = table.iloc[0]
    assert row["recipe"] == "scratch-short" and row["seed"] == 0

    # What a user writes: the model as compare builds it, then vlmzoo.train with the same seed and budget.
    model = model_for_task(PRESET, task, seed=0)
    result = train(model, task, 3, batch_size=4, seed=0, progress=False)
    assert result.losses == table.attrs["loss_curves"][PRESET]["loss"]
    assert evaluate(model, task).overall == row["accuracy"]
    kept = comparison.models[PRESET]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), kept.state_dict().values()))
    rebuilt, again = comparison.rebuild(PRESET)
    assert again.losses == result.losses


def test_train_for_task_is_build_init_and_train(task):
    model, result = train_for_task(PRESET, task, 2, batch_size=4, progress=False)
    reference = model_for_task(PRESET, task)
    train(reference, task, 2, batch_size=4, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_twenty_steps_of_default_training_give_answers():
    # The session: build the preset, train 20 steps with the defaults, evaluate.
    task = make_task("shapes", seed=0, n_train=640, n_val=0, n_test=48)
    torch.manual_seed(0)  # the init does not depend on the tests that ran before
    model = vlmzoo.build(PRESET)
    train(model, task, "20steps", progress=False)
    evaluation = evaluate(model, task)
    assert all(p["prediction"] for p in evaluation.predictions)  # no empty answers
    assert evaluation.overall > 0.0


SCRIPT_WITHOUT_MAIN_GUARD = textwrap.dedent("""
    import vlmzoo
    from vlmzoo.data import make_task

    task = make_task("shapes", seed=0, n_train=16, n_val=0, n_test=8)
    comparison = vlmzoo.compare(["llava-1.5-tiny"], task=task, budget=1, batch_size=4, keep_models=True,
                                seeds=2, workers=2, progress=False, print_table=False)
    table, figures = comparison
    model = comparison.models["llava-1.5-tiny"]
    print("rows", len(table), "figures", len(figures), "model", type(model).__name__,
          model.num_parameters() == table["params_total"][0])
""")


def test_compare_runs_from_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "my_comparison.py"
    script.write_text(SCRIPT_WITHOUT_MAIN_GUARD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_DIR), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows 2 figures 4 model Model True" in result.stdout  # two seeds, two worker processes
    assert "BrokenProcessPool" not in result.stderr and "bootstrapping phase" not in result.stderr


def test_compare_saves_kept_models_where_asked(task, tmp_path):
    comparison = compare([PRESET], task=task, budget=1, batch_size=4, isolate=False, keep_models=tmp_path,
                         progress=False, print_table=False)
    folder = comparison.models[PRESET]
    assert folder == tmp_path / PRESET
    loaded = vlmzoo.from_pretrained(folder)
    assert loaded.num_parameters() == comparison.table["params_total"][0]
    from vlmzoo.families import AutoProcessor

    assert AutoProcessor.from_pretrained(folder).tokenizer.word_tokenizer == task.tokenizer


def test_a_failure_in_the_isolated_process_is_raised_with_its_traceback(task):
    broken = {**vlmzoo.load_config(PRESET), "name": "broken"}
    with pytest.raises(ValueError, match="caption_fraction") as raised:
        compare([broken], task=task, budget=1, batch_size=4, caption_fraction=1.5, progress=False, print_table=False)
    assert any("in the process training 'broken'" in note for note in getattr(raised.value, "__notes__", []))
