"""The model behaves like a torch module from Python: gradients reach the C++ parameters, an
optimizer trains them, frozen slots stay put, state dicts and dtypes round-trip."""
from __future__ import annotations

import pytest
import torch

import vlmzoo


def fixed_batch(model, batch=4, text=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = model.visual_tokens_per_image
    image = torch.full((batch, tokens), model.image_token_id)
    words = torch.randint(10, 200, (batch, text), generator=g)
    input_ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), image, words], 1)
    labels = input_ids.clone()
    labels[:, : 1 + tokens] = -100
    pixels = torch.randn(batch, 3, 64, 64, generator=g)
    return dict(input_ids=input_ids, pixel_values=pixels, labels=labels)


def train_steps(model, batch, steps=8, lr=3e-3):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_optimizer_steps_from_python_lower_the_loss():
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny").train()
    batch = fixed_batch(model)
    losses = train_steps(model, batch)
    assert losses[-1] < 0.7 * losses[0], losses


def test_frozen_slots_do_not_change_while_the_rest_trains():
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny").train()
    model.freeze("vision", "llm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, fixed_batch(model), steps=3)
    after = model.state_dict()
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == name.startswith("abstractor."), name
    assert model.num_parameters(trainable_only=True) == model.num_parameters("abstractor")


def test_gradients_reach_every_parameter():
    model = vlmzoo.build("llava-1.5-tiny")
    model(**fixed_batch(model)).loss.backward()
    # post_norm is held for checkpoints but LLaVA reads hidden states before it; the vision
    # layers after the feature layer (-2) are not run.
    unused = ("vision.post_norm.", "vision.layers.2.")
    for name, p in model.named_parameters():
        if name.startswith(unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_round_trips_between_models():
    a, b = vlmzoo.build("llava-1.5-tiny"), vlmzoo.build("llava-1.5-tiny")
    batch = fixed_batch(a)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.equal(a(**batch).logits, b(**batch).logits)


def test_save_pretrained_and_from_pretrained_round_trip(tmp_path):
    a = vlmzoo.build("llava-1.5-tiny")
    a.save_pretrained(tmp_path)
    b = vlmzoo.from_pretrained(tmp_path)
    assert b.config == a.config
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), name


def test_load_state_dict_names_missing_unexpected_and_mismatched_keys():
    model = vlmzoo.build("llava-1.5-tiny")
    state = model.state_dict()
    state.pop("llm.norm.weight")
    state["llm.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \(1\): llm\.norm\.weight.*unexpected keys \(1\): llm\.extra"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["llm.norm.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"llm\.norm\.weight: checkpoint \(3,\) vs model \(256,\)"):
        model.load_state_dict(state)


def test_to_bfloat16_runs_in_bfloat16():
    model = vlmzoo.build("llava-1.5-tiny").to(torch.bfloat16)
    assert model.dtype == torch.bfloat16
    batch = fixed_batch(model)
    batch.pop("labels")
    assert model(**batch).logits.dtype == torch.bfloat16


def test_train_and_eval_modes_toggle():
    model = vlmzoo.build("llava-1.5-tiny")
    assert model.train().training
    assert not model.eval().training


def test_sampling_is_reproducible_per_seed_and_respects_top_k():
    model = vlmzoo.build("llava-1.5-tiny")
    batch = fixed_batch(model, batch=2)
    batch.pop("labels")
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.5, top_k=5, eos_token_id=[])
    a = model.generate(**batch, seed=1, **kwargs)
    b = model.generate(**batch, seed=1, **kwargs)
    c = model.generate(**batch, seed=2, **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # top_k=1 sampling is greedy decoding.
    greedy = model.generate(**batch, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(model.generate(**batch, max_new_tokens=6, do_sample=True, top_k=1, eos_token_id=[]), greedy)
    # a tiny top_p keeps only the most likely token: greedy again.
    assert torch.equal(model.generate(**batch, max_new_tokens=6, do_sample=True, top_p=1e-6, eos_token_id=[]), greedy)


def test_generate_rejects_bad_arguments():
    model = vlmzoo.build("llava-1.5-tiny")
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        model.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match=r"top_p: must lie in \(0, 1\]"):
        model.generate(ids, top_p=1.5)
    with pytest.raises(ValueError, match=r"input_ids: token ids must lie in \[0, llm.vocab 512\)"):
        model.generate(torch.tensor([[1, 999]]))
