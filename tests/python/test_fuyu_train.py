"""Fuyu tiny trains end to end, as Fuyu was trained (the patch projection and the decoder together), and
keeps the torch-module habits (save and load, deepcopy) of every other family."""
from __future__ import annotations

import copy

import pytest
import torch

import vlmzoo
from vlmzoo.data import make_task
from vlmzoo.config.towers import SLOTS
from vlmzoo.models.initialize import init_weights
from vlmzoo.training.recipes import recipe_for
from vlmzoo.training.train import FAMILY_TRAINABLE, task_overrides, train


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=128, n_val=0, n_test=16)


def fresh(task, name="fuyu-tiny"):
    config = vlmzoo.resolve_config(name)
    model = vlmzoo.build(config, **task_overrides(config, task.tokenizer))
    init_weights(model, std=0.02, seed=0)
    return model


def test_fuyu_tiny_loss_falls_in_30_steps_trained_end_to_end(task):
    model = fresh(task)
    assert FAMILY_TRAINABLE["fuyu"] == SLOTS  # end to end, so the scratch recipe trains the patch projection too
    assert recipe_for("fuyu", "scratch").trainable == SLOTS
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(model, task, 30, batch_size=4, lr=3e-3, trainable="family", progress=False)
    assert result.steps == 30
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, result.losses
    changed = {n.split(".", 1)[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"vision", "llm"}


def test_the_cheaper_stage_trains_the_patch_projection_alone(task):
    model = fresh(task, "fuyu-micro")
    stages = vlmzoo.families()["fuyu"]["stages"]
    assert stages["patches"] == ["vision"]
    llm = {n: p.detach().clone() for n, p in model.named_parameters("llm")}
    result = train(model, task, 5, batch_size=4, lr=3e-3, trainable=tuple(stages["patches"]), progress=False)
    assert result.steps == 5
    assert all(torch.equal(llm[n], p) for n, p in model.named_parameters("llm"))
    assert model.num_parameters(trainable_only=True) == model.num_parameters("vision")


def test_save_load_and_deepcopy_keep_the_logits(tmp_path):
    torch.manual_seed(0)
    model = vlmzoo.build("fuyu-micro").eval()
    ids = torch.tensor([[1] + [4] * model.visual_tokens_per_image + [7, 8]])
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(ids, pixels).logits
        model.save_pretrained(tmp_path)
        for other in (vlmzoo.from_pretrained(tmp_path), copy.deepcopy(model)):
            torch.testing.assert_close(other(ids, pixels).logits, expected, rtol=0, atol=0)


def test_fuyu_micro_has_the_micro_llava_language_model_size_and_runs_in_compare(task, tmp_path):
    from vlmzoo.study.compare import compare

    fuyu, llava = vlmzoo.resolve_config("fuyu-micro"), vlmzoo.resolve_config("llava-1.5-micro")
    assert (fuyu["llm"]["hidden"], fuyu["llm"]["layers"]) == (llava["llm"]["hidden"], llava["llm"]["layers"])
    assert vlmzoo.visual_tokens_per_image(fuyu) == vlmzoo.visual_tokens_per_image(llava) == 16
    table, _ = compare(["fuyu-micro"], task=task, budget=2, out=tmp_path, seeds=1, batch_size=4, curve_points=1,
                       progress=False, print_table=False)
    assert list(table["model"]) == ["fuyu-micro"] and (table["steps"] == 2).all()
