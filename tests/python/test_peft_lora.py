"""PEFT's LoRA on vlmzoo models: the Linear views are `nn.Linear`s, so `get_peft_model` wraps them, and a
wrapped view runs inside the C++ forward. The adapters change the logits, train (only they get gradients),
merge into the C++ weights, and save and load."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from test_slot_kinds import batch_for

peft = pytest.importorskip("peft")

FAMILIES = ["llava-1.5-micro", "blip2-opt-micro", "fuyu-micro", "flamingo-micro"]


def build(preset: str) -> vlmzoo.Model:
    torch.manual_seed(0)
    model = vlmzoo.build(preset)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("fusion.") and "gate" in name:
                p.fill_(0.7)  # Flamingo's gates start closed
    return model


def attention_targets(model) -> list[str]:
    """The LM's attention projections, by the names the family's layers give them."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
             if name.startswith("llm.layers.0.") and isinstance(m, torch.nn.Linear)}
    wanted = [n for n in ("q_proj", "v_proj") if n in names]
    return wanted or sorted(n for n in names if "qkv" in n or "query" in n)


def lora(model, **kwargs):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=attention_targets(model), **kwargs)
    return peft.get_peft_model(model, config)


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("preset", FAMILIES)
def test_lora_adapters_wrap_the_attention_views_and_change_the_logits(preset):
    model = build(preset).eval()
    inputs = batch_for(model)
    base = logits(model, inputs)
    adapted = lora(model, init_lora_weights=False)  # B is random, not zero: the adapters act from the start
    wrapped = [n for n, m in adapted.named_modules() if isinstance(m, peft.tuners.lora.Linear)]
    assert any(".llm.layers.0." in n for n in wrapped) and len(wrapped) >= model.config["llm"]["layers"]
    assert (logits(adapted, inputs) - base).abs().max().item() > 1e-3


def test_lora_trains_only_the_adapters_and_the_loss_falls():
    model = build("llava-1.5-micro")
    adapted = lora(model)
    inputs = batch_for(model, seed=1)
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    assert trainable and all(n.count("lora_") for n, p in adapted.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=5e-3)
    adapted.train()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = adapted(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    for name, p in adapted.named_parameters():
        if "lora_" in name:
            # the vision tower's last layer is unused (LLaVA reads the penultimate), so its adapters get none
            assert p.grad is not None or ".vision.layers.2." in name, name
        else:
            assert p.grad is None, name  # the C++ weights are frozen and untouched


def test_merge_and_unload_gives_a_plain_model_with_the_adapted_logits():
    model = build("llava-1.5-micro").eval()
    inputs = batch_for(model)
    adapted = lora(model, init_lora_weights=False)
    expected = logits(adapted, inputs)
    merged = adapted.merge_and_unload()
    assert isinstance(merged, vlmzoo.Model)
    assert not any(isinstance(m, peft.tuners.lora.Linear) for m in merged.modules())
    assert (logits(merged, inputs) - expected).abs().max().item() <= 1e-5
    assert not merged._blocks.installed  # the fused C++ forward runs the merged weights
    assert merged.generate(**inputs, max_new_tokens=3, eos_token_id=[]).shape[1] == inputs["input_ids"].shape[1] + 3


def test_adapters_save_and_load_onto_a_fresh_model(tmp_path):
    model = build("llava-1.5-micro").eval()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = batch_for(model)
    adapted = lora(model, init_lora_weights=False)
    expected = logits(adapted, inputs)
    adapted.save_pretrained(tmp_path)
    fresh = vlmzoo.build("llava-1.5-micro").eval()
    fresh.load_state_dict(base_state)
    assert (logits(fresh, inputs) - expected).abs().max().item() > 1e-3
    loaded = peft.PeftModel.from_pretrained(fresh, tmp_path)
    assert (logits(loaded, inputs) - expected).abs().max().item() <= 1e-6


def test_lora_on_the_lm_changes_generated_tokens_like_the_forward():
    model = build("llava-1.5-micro").eval()
    inputs = batch_for(model)
    adapted = lora(model, init_lora_weights=False)
    tokens = adapted.generate(**inputs, max_new_tokens=1, eos_token_id=[])
    assert torch.equal(tokens[:, -1], logits(adapted, inputs)[:, -1].argmax(-1))
