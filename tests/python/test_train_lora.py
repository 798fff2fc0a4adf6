"""Specifications of `vlmzoo.train(..., lora=...)`: the LM trains through LoRA adapters (its weights
untouched), the other trained slots train fully, the FLOP budget counts what a LoRA step costs, and a bad
LoRA config is refused by name."""
import pytest
import torch

import vlmzoo
from vlmzoo.data import make_task
from vlmzoo.models.info import forward_flops
from vlmzoo.training.lora import LORA_DEFAULTS, lm_projections, lora_config
from vlmzoo.training.rows import train_for_task
from vlmzoo.training.train import (flops_with_backward, lm_sequence_tokens, mean_text_tokens, task_overrides, train,
                                   train_flops_per_example)

peft = pytest.importorskip("peft")
BATCH = 8


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=64, n_val=0, n_test=16)


def micro_model(task):
    config = vlmzoo.resolve_config("llava-1.5-micro")
    torch.manual_seed(0)
    return vlmzoo.build(config, **task_overrides(config, task.tokenizer))


def test_lora_training_lowers_the_loss(task):
    result = train(micro_model(task), task, 12, batch_size=BATCH, lr=1e-2, lora={"r": 4}, progress=False)
    assert isinstance(result.adapted, peft.PeftModel)
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.5


def test_lora_changes_only_the_adapters_and_the_other_trained_slots(task):
    model = micro_model(task)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = train(model, task, 2, batch_size=BATCH, lora={}, progress=False)
    assert result.trainable_slots == ("abstractor", "llm")
    after = dict(model.named_parameters())
    for name, value in before.items():
        # peft moves each adapted Linear's weight under .base_layer
        now = after.get(name, after.get(name.replace(".weight", ".base_layer.weight")))
        if name.startswith("abstractor."):
            assert not torch.equal(now, value), name
        else:
            assert torch.equal(now, value), name  # the LM's base weights and the vision tower: bit-identical
    adapters = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    assert adapters and all(n.startswith("llm.layers.") and p.requires_grad for n, p in adapters.items())
    assert any(".lora_B." in n and p.abs().max() > 0 for n, p in adapters.items())  # B starts at 0 and moved
    assert result.extra["lora"]["adapter_parameters"] == sum(p.numel() for p in adapters.values())


def test_lora_defaults_adapt_every_attention_and_mlp_projection_of_the_lm_only(task):
    model = micro_model(task)
    config = lora_config(model, {})
    assert (config.r, config.lora_alpha) == (LORA_DEFAULTS["r"], LORA_DEFAULTS["lora_alpha"]) == (8, 16)
    assert sorted(config.target_modules) == sorted(lm_projections(model))
    assert {n.rsplit(".", 1)[-1] for n in config.target_modules} >= {"q_proj", "v_proj", "o_proj", "down_proj"}
    short = lora_config(model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert short.r == 2 and all(n.startswith("llm.layers.") and n.endswith(".q_proj") for n in short.target_modules)


def test_lora_flops_count_the_frozen_lm_forward_and_input_gradients_and_the_adapters(task):
    config = vlmzoo.resolve_config("llava-1.5-micro")
    text = round(mean_text_tokens(task))
    forward = forward_flops(config, text_tokens=text)
    slots = ("abstractor", "llm")
    full = train_flops_per_example(config, task, 0.0, slots)
    adapters = 1000
    lora = train_flops_per_example(config, task, 0.0, slots, lora_parameters=adapters)
    adapter_forward = 2 * adapters * lm_sequence_tokens(config, text)
    # full: the LM's weight gradients (one forward-worth); LoRA: none, but 3x the adapters' forward
    assert full - lora == forward["llm"] - 3 * adapter_forward
    assert lora == forward["vision"] + 2 * forward["abstractor"] + 2 * forward["llm"] + 3 * adapter_forward
    # the adapters need the LM's input gradients even when nothing upstream trains
    assert flops_with_backward(forward, ("llm",), adapter_forward) == (
        forward["vision"] + forward["abstractor"] + 2 * forward["llm"] + 3 * adapter_forward)
    assert lm_sequence_tokens(config, text) == text + 16  # the micro LLaVA splices 16 visual tokens


def test_a_lora_run_takes_more_steps_than_full_fine_tuning_for_the_same_flops(task):
    full = train(micro_model(task), task, "2e9flops", batch_size=BATCH, progress=False)
    lora = train(micro_model(task), task, "2e9flops", batch_size=BATCH, lora={"r": 2}, progress=False)
    assert lora.flops_per_example < full.flops_per_example
    assert lora.steps >= full.steps and lora.train_flops <= 2e9


@pytest.mark.parametrize("lora, message", [
    ({"rank": 8}, "unknown field"),
    ({"r": 0}, "lora.r must be an int >= 1"),
    ({"lora_alpha": -1}, "lora.lora_alpha"),
    ({"lora_dropout": 1.5}, "lora.lora_dropout"),
    ({"target_modules": ["qproj"]}, "names no Linear of the LM's layers"),
    ({"target_modules": r"vision\..*q_proj"}, "outside the LM's layers"),
    ("r=8", "takes a peft.LoraConfig or a dict"),
])
def test_a_bad_lora_config_is_refused_by_name(task, lora, message):
    with pytest.raises((ValueError, TypeError), match=message):
        train(micro_model(task), task, 1, batch_size=BATCH, lora=lora, progress=False)


def test_lora_with_the_lm_frozen_is_refused(task):
    with pytest.raises(ValueError, match="leaves 'llm' out"):
        train(micro_model(task), task, 1, batch_size=BATCH, lora={}, trainable=["abstractor"], progress=False)


def test_train_for_task_returns_the_model_with_the_adapters_merged(task):
    model, result = train_for_task("llava-1.5-micro", task, 2, batch_size=BATCH, lora={"r": 2}, progress=False)
    assert isinstance(model, vlmzoo.Model) and result.adapted is None and result.extra["lora"]["r"] == 2
    assert not any(".lora_" in n or ".base_layer" in n for n, _ in model.named_parameters())
    assert model.generate(**{k: v[:1] for k, v in make_batch(task, model).items()}, max_new_tokens=2).shape[0] == 1


def make_batch(task, model):
    from vlmzoo.data import collate
    return {k: v for k, v in collate(task.test[:2], task.tokenizer, visual_tokens_per_image=model.visual_tokens_per_image,
                                     image_size=64).items() if k in ("input_ids", "attention_mask", "pixel_values")}
