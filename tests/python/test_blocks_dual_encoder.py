"""The dual encoders' (CLIP, SigLIP) blocks are real modules: each tower's encoder layers, norms, attentions and
MLPs are callable and hookable (forward hooks, pre-hooks, replacements run inside the C++ forward), and PEFT's
LoRA wraps their q_proj / v_proj views: the adapters change the embeddings and train."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from test_dual_encoder_kinds import batch_for

PRESETS = ["clip-tiny", "siglip-tiny"]


def build(preset: str) -> vlmzoo.Model:
    torch.manual_seed(0)
    return vlmzoo.build(preset).eval()


def embeds(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.image_embeds, out.text_embeds


@pytest.mark.parametrize("preset", PRESETS)
def test_a_vision_layer_alone_gives_what_it_gave_inside_the_forward(preset):
    model = build(preset)
    inputs = batch_for(model)
    seen = {}
    model.vision.layers[1].register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    embeds(model, inputs)
    with torch.no_grad():
        alone = model.vision.layers[1](seen["x"])
    assert (alone - seen["y"]).abs().max().item() <= 1e-5
    assert (alone - seen["x"]).abs().max().item() > 1e-3


@pytest.mark.parametrize("preset", PRESETS)
def test_identity_hooks_on_every_encoder_block_keep_the_embeddings(preset):
    model = build(preset)
    inputs = batch_for(model)
    before = embeds(model, inputs)
    calls = set()
    for name, module in model.named_modules():
        if type(module).__name__ in ("BlockView", "LinearView"):
            module.register_forward_hook(lambda m, args, out, name=name: calls.add(name) or out)
            module.register_forward_pre_hook(lambda m, args: args)
    after = embeds(model, inputs)
    for b, a in zip(before, after):
        assert (a - b).abs().max().item() <= 1e-5
    assert {"vision.layers.0", "llm.layers.0", "vision.layers.0.attn", "llm.layers.1.mlp"} <= calls


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("tower", ["vision", "llm"])
def test_a_hook_on_an_encoder_layer_changes_only_its_towers_embeddings(preset, tower):
    model = build(preset)
    inputs = batch_for(model)
    image, text = embeds(model, inputs)
    model.get_submodule(f"{tower}.layers.0").register_forward_hook(lambda m, args, out: out * 0.5)
    image2, text2 = embeds(model, inputs)
    changed, same = (image2 - image, text2 - text) if tower == "vision" else (text2 - text, image2 - image)
    assert changed.abs().max().item() > 1e-3
    assert same.abs().max().item() == 0


def test_a_replaced_encoder_layer_runs_in_its_place():
    model = build("clip-tiny")
    inputs = batch_for(model)
    before = embeds(model, inputs)[0]
    model.vision.layers[0] = torch.nn.Identity()  # the tower without its first layer
    skipped = embeds(model, inputs)[0]
    assert (skipped - before).abs().max().item() > 1e-3


def test_gradients_through_an_encoder_layer_view_match_finite_differences():
    torch.manual_seed(0)
    model = vlmzoo.build("clip-tiny", dtype=torch.float64)
    layer = model.vision.layers[0]
    hidden = torch.randn(2, 5, model.config["vision"]["hidden"], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: layer(h), (hidden,), eps=1e-6, atol=1e-5, fast_mode=True)


# ---- PEFT
peft = pytest.importorskip("peft")


@pytest.mark.parametrize("preset", PRESETS)
def test_lora_on_q_and_v_projections_changes_the_embeddings_and_trains(preset):
    model = build(preset)
    inputs = batch_for(model)
    before = embeds(model, inputs)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                         init_lora_weights=False))
    wrapped = {n for n, m in adapted.named_modules() if isinstance(m, peft.tuners.lora.Linear)}
    assert any(".vision.layers.0.attn.q_proj" in n for n in wrapped) and any(".llm.layers.0.attn.v_proj" in n
                                                                          for n in wrapped)
    after = embeds(adapted, inputs)
    assert all((a - b).abs().max().item() > 1e-3 for a, b in zip(after, before))
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in adapted.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    adapted.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = adapted(**inputs, return_loss=True).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for n, p in adapted.named_parameters() if "lora_" not in n)
