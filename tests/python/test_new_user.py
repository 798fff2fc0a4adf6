"""What a new user tripped on (issue 24, "What else a new user hit"): each behaviour as a test."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.data import tasks as task_module


@pytest.fixture
def small_named_tasks(monkeypatch):
    """A task name builds make_task's default data; here made small so the test stays fast."""
    real = task_module.make_task
    built = []

    def small(name, **kwargs):
        built.append(name)
        return real(name, **{"n_train": 64, "n_val": 0, "n_test": 8, **kwargs})

    monkeypatch.setattr(task_module, "make_task", small)
    return built


def test_train_and_evaluate_take_a_task_name(small_named_tasks):
    model = vlmzoo.build("llava-1.5-micro")
    result = vlmzoo.train(model, "shapes", budget=2, progress=False)
    assert result.steps == 2 and len(result.losses) == 2
    evaluation = vlmzoo.evaluate(model, "shapes")
    assert evaluation.counts["all"] == 8
    assert small_named_tasks == ["shapes", "shapes"]


def test_an_unknown_task_name_lists_the_built_in_tasks():
    model = vlmzoo.build("llava-1.5-micro")
    with pytest.raises(ValueError, match=r"unknown task 'shape'.*digits, shapes"):
        vlmzoo.train(model, "shape", budget=1)
