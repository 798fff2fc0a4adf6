"""The training step's fast path (fused kernels and their one-pass backwards, the fused cross-entropy,
fused AdamW, the frozen tower run without a graph) learns what the plain path learns: the same loss
curve, step by step, as the plain ATen references with torch's cross_entropy and the per-parameter
AdamW loop."""
import importlib

import pytest
import torch

import vlmzoo
from vlmzoo.training.train import train
from train_fixtures import small_shapes_task, tiny_model

train_module = importlib.import_module("vlmzoo.training.train")


@pytest.fixture(scope="module")
def task():
    return small_shapes_task(8)


def plain_optimizer(param_groups, lr):
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.95), foreach=False, fused=False)


def test_the_default_optimizer_is_fused_adamw(task):
    optimizer = train_module.make_optimizer([{"params": [torch.nn.Parameter(torch.randn(3, 5))]}], 1e-3)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]


def test_the_fast_path_follows_the_plain_reference_loss_curve(task, monkeypatch):
    steps = 16
    fast = train(tiny_model(task), task, steps, batch_size=8, lr=2e-3, progress=False)
    plain_model = tiny_model(task)
    plain_model.fused = False  # ATen references, ATen autograd, torch's cross_entropy
    with monkeypatch.context() as m:
        m.setattr(train_module, "make_optimizer", plain_optimizer)
        plain = train(plain_model, task, steps, batch_size=8, lr=2e-3, progress=False)
    assert fast.trainable_slots == plain.trainable_slots and "vision" not in fast.trainable_slots
    # Float32 rounding differs (kernel order of sums, fused AdamW); over 16 steps it stays far below
    # what the curve itself moves (the loss falls by > 1 nat over these steps).
    torch.testing.assert_close(torch.tensor(fast.losses), torch.tensor(plain.losses), atol=2e-3, rtol=1e-3)
    assert plain.losses[0] - plain.losses[-1] > 1.0


def test_a_frozen_tower_gives_the_same_gradients_as_a_training_one(task):
    # The frozen tower runs under no_grad (no graph); what reaches the slots downstream must not change.
    from vlmzoo.training.train import _batches

    model = tiny_model(task)
    model.train()
    batch = next(_batches(task, model, 4, 0, 0))
    grads = {}
    for frozen in (False, True):
        model.requires_grad_(not frozen, "vision")
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        grads[frozen] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert not any(n.startswith("vision") for n in grads[True])
    assert any(n.startswith("vision") for n in grads[False])
    for name, g in grads[True].items():
        torch.testing.assert_close(g, grads[False][name], atol=1e-6, rtol=1e-5)
