"""Flamingo tiny trains the way Flamingo was trained: the perceiver and the gated cross-attention blocks
learn while the vision tower and the language model stay frozen; the gates leave zero."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.data import make_task
from vlmzoo.models.initialize import init_weights
from vlmzoo.training.train import FAMILY_TRAINABLE, task_overrides, train


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=128, n_val=0, n_test=16)


def snapshot(model, slot):
    return {name: p.detach().clone() for name, p in model.named_parameters(slot)}


def test_flamingo_tiny_loss_falls_with_the_perceiver_and_gated_blocks_trainable(task):
    config = vlmzoo.resolve_config("flamingo-tiny")
    model = vlmzoo.build(config, **task_overrides(config, task.tokenizer))
    init_weights(model, std=0.02, seed=0)
    assert FAMILY_TRAINABLE["flamingo"] == ("abstractor", "fusion")
    gates = {n: p for n, p in model.named_parameters("fusion") if n.endswith("_gate")}
    assert gates and all(torch.count_nonzero(p) == 0 for p in gates.values())  # init_weights keeps them at 0
    frozen = {slot: snapshot(model, slot) for slot in ("vision", "llm")}
    result = train(model, task, 30, batch_size=4, lr=5e-3, trainable="family", progress=False)
    assert result.steps == 30
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * result.losses[0] and last < first, result.losses
    for slot, before in frozen.items():
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters(slot)), slot
    assert all(torch.count_nonzero(p) > 0 for p in gates.values())
    assert model.num_parameters(trainable_only=True) == model.num_parameters("abstractor") + model.num_parameters("fusion")
