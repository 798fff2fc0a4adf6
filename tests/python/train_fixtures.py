"""The tiny training setup several test files share: the shapes task at test size, and the tiny LLaVA
made to speak its tokenizer."""
from __future__ import annotations

import torch

import vlmzoo
from vlmzoo.data import make_task
from vlmzoo.training.train import task_overrides


def small_shapes_task(n_test: int):
    return make_task("shapes", seed=0, n_train=64, n_val=0, n_test=n_test)


def tiny_model(task):
    config = vlmzoo.resolve_config("llava-1.5-tiny")
    torch.manual_seed(0)
    return vlmzoo.build(config, **task_overrides(config, task.tokenizer))
