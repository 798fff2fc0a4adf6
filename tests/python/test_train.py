"""Specifications of training: loss goes down, freezing holds, budgets convert, checkpoints resume."""
import pytest
import torch

import vlmzoo
from vlmzoo.data import make_task
from vlmzoo.training.train import (
    FAMILY_TRAINABLE, TOKENIZER_FILE, parse_budget, task_overrides, train, train_flops_per_example,
)

BATCH = 8


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=64, n_val=0, n_test=16)


def tiny_model(task, **overrides):
    config = vlmzoo.resolve_config("llava-1.5-tiny", **overrides)
    torch.manual_seed(0)
    return vlmzoo.build(config, **task_overrides(config, task.tokenizer))


def snapshot(model, slot):
    return {name: p.detach().clone() for name, p in model.named_parameters(slot)}


def changed(before, model, slot):
    after = dict(model.named_parameters(slot))
    return any(not torch.equal(before[name], after[name]) for name in before)


def test_training_lowers_the_loss(task):
    result = train(tiny_model(task), task, 12, batch_size=BATCH, lr=2e-3, trainable="all", progress=False)
    assert len(result.losses) == result.steps == 12
    assert sum(result.losses[-3:]) / 3 < 0.5 * result.losses[0]


def test_frozen_slots_do_not_change(task):
    model = tiny_model(task)
    before = {slot: snapshot(model, slot) for slot in ("vision", "abstractor", "llm")}
    result = train(model, task, 2, batch_size=BATCH, trainable=["abstractor"], progress=False)
    assert result.trainable_slots == ("abstractor",)
    assert changed(before["abstractor"], model, "abstractor")
    assert not changed(before["vision"], model, "vision")
    assert not changed(before["llm"], model, "llm")
    assert model.num_parameters(trainable_only=True) == model.num_parameters("abstractor")


def test_the_family_preset_trains_llava_projector_only(task):
    model = tiny_model(task)
    result = train(model, task, 1, batch_size=BATCH, trainable="family", progress=False)
    assert result.trainable_slots == FAMILY_TRAINABLE["llava"] == ("abstractor",)


def test_budget_is_steps_or_flops():
    assert parse_budget(300) == parse_budget("300") == parse_budget("300steps") == 300
    assert parse_budget("2e12flops", flops_per_step=1e9) == 2000
    assert parse_budget("1.5e3 FLOPs", flops_per_step=100) == 15
    for bad in ("fast", "0steps", "10flops", True):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad, flops_per_step=1e9)


def test_training_flops_count_weight_and_input_gradients_of_each_slot(task):
    config = tiny_model(task).config
    text = round(sum(2 + len(task.tokenizer.encode(e.question)) + len(task.tokenizer.encode(e.answer))
                     for e in task.train) / len(task.train))
    forward = vlmzoo.forward_flops(config, text_tokens=text, images=1)
    # Pixels need no gradient, so even a trained vision tower costs 2 forwards; the rest 3.
    assert train_flops_per_example(config, task) == 2 * forward["vision"] + 3 * (forward["abstractor"] + forward["llm"])
    frozen_vision = train_flops_per_example(config, task, trainable=("abstractor", "llm"))
    assert frozen_vision == forward["vision"] + 2 * forward["abstractor"] + 3 * forward["llm"]


def test_a_flops_budget_buys_whole_steps(task):
    model = tiny_model(task)
    per_example = train_flops_per_example(model.config, task)
    result = train(model, task, f"{3.5 * per_example * BATCH:.6e}flops", batch_size=BATCH, trainable="all",
                   caption_fraction=0.0, progress=False)
    assert result.steps == 3
    assert result.train_flops == 3 * per_example * BATCH


def test_a_model_whose_vocab_is_smaller_than_the_tokenizer_is_refused(task):
    model = vlmzoo.build("llava-1.5-tiny", llm={"vocab": 16})
    with pytest.raises(ValueError, match="llm.vocab 16"):
        train(model, task, 1, progress=False)


def test_a_checkpoint_round_trips(task, tmp_path):
    model = tiny_model(task)
    result = train(model, task, 2, batch_size=BATCH, trainable="all", checkpoint_dir=tmp_path, progress=False)
    folder = tmp_path / "step-000002"
    assert result.checkpoint == str(folder)
    assert (folder / TOKENIZER_FILE).is_file()
    loaded = vlmzoo.from_pretrained(folder)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p, rtol=0, atol=0)
    batch = next(task.batches("test", 4, visual_tokens_per_image=model.visual_tokens_per_image))
    torch.testing.assert_close(loaded(**batch).logits, model.eval()(**batch).logits)


def test_resume_continues_the_step_count_and_the_run(task, tmp_path):
    kwargs = dict(batch_size=BATCH, trainable="all", progress=False)
    straight = train(tiny_model(task), task, 4, **kwargs)
    train(tiny_model(task), task, 4, checkpoint_dir=tmp_path, checkpoint_every=2, **kwargs)
    resumed = train(tiny_model(task), task, 4, resume_from=tmp_path / "step-000002", **kwargs)
    assert resumed.steps == 4 and len(resumed.losses) == 4
    torch.testing.assert_close(resumed.losses, straight.losses, rtol=1e-4, atol=1e-5)


def test_resume_from_a_checkpoint_dir_picks_its_latest_step(task, tmp_path):
    kwargs = dict(batch_size=BATCH, trainable="all", progress=False)
    train(tiny_model(task), task, 2, checkpoint_dir=tmp_path, checkpoint_every=1, **kwargs)
    resumed = train(tiny_model(task), task, 3, resume_from=tmp_path, **kwargs)
    assert len(resumed.losses) == 3  # two restored, one new


def test_init_weights_follows_transformers_recipe(task):
    from vlmzoo.models.initialize import init_weights

    model = init_weights(tiny_model(task), std=0.02)
    params = dict(model.named_parameters())
    assert torch.equal(params["llm.norm.weight"], torch.ones_like(params["llm.norm.weight"]))
    assert not params["vision.layers.0.attn.q_proj.bias"].any()
    for name in ("vision.position_embed.weight", "llm.embed_tokens.weight", "llm.layers.0.attn.q_proj.weight"):
        assert abs(params[name].std().item() - 0.02) < 0.002, name


def test_a_tiny_model_trains_under_bfloat16_autocast(task):
    # Autocast makes the linear outputs bfloat16 while the residual stream and the norm weights stay
    # float32: add_rms_norm then meets x and residual of different dtypes.
    model = tiny_model(task)
    model.train()
    batch = next(task.batches("train", 4, visual_tokens_per_image=model.visual_tokens_per_image))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    autocast_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert autocast_grads and all(torch.isfinite(g).all() for g in autocast_grads.values())
    model.zero_grad()  # grads to None
    full = model(**batch).loss
    full.backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == set(autocast_grads)
    assert abs(loss.item() - full.item()) < 0.05 * abs(full.item())
