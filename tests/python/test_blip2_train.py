"""BLIP-2 tiny trains the way BLIP-2 was trained: the Q-Former (with its queries and the projection)
learns while the vision tower and the language model stay frozen."""
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


def test_blip2_tiny_loss_falls_with_only_the_qformer_trainable(task):
    config = vlmzoo.resolve_config("blip2-opt-tiny")
    model = vlmzoo.build(config, **task_overrides(config, task.tokenizer))
    init_weights(model, std=0.02, seed=0)
    frozen = {slot: snapshot(model, slot) for slot in ("vision", "llm")}
    abstractor = snapshot(model, "abstractor")
    assert FAMILY_TRAINABLE["blip2"] == ("abstractor",)
    result = train(model, task, 30, batch_size=4, lr=5e-3, trainable="family", progress=False)
    assert result.steps == 30
    # A frozen random LM bounds how far its soft prompt can take the loss (measured: 6.7 -> 4.8).
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * result.losses[0] and last < first, result.losses
    for slot, before in frozen.items():
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters(slot)), slot
    assert any(not torch.equal(abstractor[n], p) for n, p in model.named_parameters("abstractor"))
    assert model.num_parameters(trainable_only=True) == model.num_parameters("abstractor")
