"""The blocks inside a decoder are real modules too: the norms (each layer's attn_norm / mlp_norm, the final
llm.norm), each layer's self-attention (`attn`, transformers' `self_attn`) and MLP, Flamingo's gated
cross-attention blocks (fusion.blocks.N) and the head. Each is callable with autograd and gives alone what it
gave inside the forward; hooks, pre-hooks and replacements on them take effect in forward and generate."""
from __future__ import annotations

import pytest
import torch

from test_blocks_hooks import FAMILIES, Doubled, assert_hooks_keep_the_fused_gradients, build, logits
from test_slot_kinds import batch_for


def inner_paths(model) -> list[str]:
    """The inner blocks of layer 0 and the model's end blocks, as named in this model."""
    names = dict(model.named_modules())
    paths = [p for p in ("llm.layers.0.attn_norm", "llm.layers.0.attn", "llm.layers.0.mlp_norm", "llm.layers.0.mlp",
                         "llm.layers.1.attn", "llm.norm", "head", "fusion.blocks.0", "fusion.blocks.0.attn_norm",
                         "fusion.blocks.0.mlp") if p in names]
    return paths


def capture(model, paths):
    seen = {}
    handles = [model.get_submodule(p).register_forward_hook(
        lambda m, args, out, p=p: seen.setdefault(p, (args, out)) and None) for p in paths]
    return seen, handles


@pytest.mark.parametrize("preset", FAMILIES)
def test_each_inner_block_alone_gives_what_it_gave_inside_the_forward(preset):
    model = build(preset)
    inputs = batch_for(model)  # no padding: a block alone uses the default mask and positions
    paths = inner_paths(model)
    assert {"llm.layers.0.attn", "llm.layers.0.mlp", "llm.norm", "head"} <= set(paths)
    if preset.startswith("flamingo"):
        assert "fusion.blocks.0" in paths
    seen, handles = capture(model, paths)
    logits(model, inputs)
    for h in handles:
        h.remove()
    assert set(seen) == set(paths), set(paths) - set(seen)
    with torch.no_grad():
        for path in paths:
            args, out = seen[path]
            alone = model.get_submodule(path)(*args)
            assert alone.shape == out.shape, path
            assert (alone - out).abs().max().item() <= 1e-5, path


@pytest.mark.parametrize("preset", FAMILIES)
def test_identity_hooks_on_every_inner_block_keep_logits_and_tokens(preset):
    model = build(preset)
    inputs = batch_for(model)
    fused = logits(model, inputs)
    tokens = model.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    calls = []
    views = [(n, m) for n, m in model.named_modules() if type(m).__name__ in
             ("BlockView", "LayerAttentionView", "GatedCrossAttentionView", "HeadView")]
    for name, module in views:
        module.register_forward_hook(lambda m, args, out, name=name: calls.append(name) or out)
        module.register_forward_pre_hook(lambda m, args: args)
    assert (logits(model, inputs) - fused).abs().max().item() <= 1e-5
    silent = {n for n, _ in views} - set(calls)
    # every one fired (the vision tower's and the Q-Former's too), but the tower's blocks after the feature layer
    assert all(n.startswith(("vision.post_norm", "vision.layers.")) for n in silent), silent
    assert preset.startswith("fuyu") or any(n.startswith("vision.layers.0.") for n in calls)  # Fuyu: no tower
    assert torch.equal(model.generate(**inputs, max_new_tokens=3, eos_token_id=[]), tokens)


@pytest.mark.parametrize("path", ["llm.layers.1.attn", "llm.layers.0.mlp", "llm.layers.0.mlp_norm", "llm.norm", "head"])
def test_a_hook_changing_an_inner_block_changes_logits_and_generate_agrees(path):
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    handle = model.get_submodule(path).register_forward_hook(lambda m, args, out: out.flip(-1))
    hooked = logits(model, inputs)
    tokens = model.generate(**inputs, max_new_tokens=1, eos_token_id=[])
    assert (hooked - before).abs().max().item() > 1e-3
    assert torch.equal(tokens[:, -1], hooked[:, -1].argmax(-1))
    handle.remove()
    assert torch.equal(logits(model, inputs), before)
    assert not model._blocks.installed


def test_zeroing_the_attention_output_by_hook_equals_zeroing_its_o_proj():
    model = build()
    inputs = batch_for(model)
    handle = model.llm.layers[0].self_attn.register_forward_hook(lambda m, args, out: torch.zeros_like(out))
    hooked = logits(model, inputs)
    handle.remove()
    with torch.no_grad():
        model.llm.layers[0].attn.o_proj.weight.zero_()
    assert (logits(model, inputs) - hooked).abs().max().item() <= 1e-5


def test_a_pre_hook_on_the_final_norm_replaces_its_input():
    model = build()
    inputs = batch_for(model)
    seen = {}
    handle = model.llm.norm.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    before = logits(model, inputs)
    handle.remove()
    model.llm.norm.register_forward_pre_hook(lambda m, args: (args[0] * 2.0 + 1.0,))
    hooked = logits(model, inputs)
    with torch.no_grad():
        expected = model.head(model.llm.norm.run_alone(seen["x"] * 2.0 + 1.0))
    assert (hooked - expected).abs().max().item() <= 1e-5
    assert (hooked - before).abs().max().item() > 1e-3


def test_hooks_on_an_attention_fire_at_prefill_and_each_decode_step():
    model = build()
    inputs = batch_for(model)
    shapes = []
    model.llm.layers[1].attn.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    model.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    prompt = inputs["input_ids"].shape[1]
    assert shapes == [(2, prompt, 128), (2, 1, 128), (2, 1, 128)]


@pytest.mark.parametrize("preset", ["llava-1.5-micro", "fuyu-micro"])
def test_a_wrapped_attention_runs_in_generate_with_the_forwards_kv_cache(preset):
    model = build(preset)
    inputs = batch_for(model)
    expected = model.generate(**inputs, max_new_tokens=4, eos_token_id=[])
    original = model.llm.layers[0].attn
    wrapper = Doubled(original)
    wrapper.forward = lambda *a, **k: (setattr(wrapper, "calls", wrapper.calls + 1), wrapper.inner(*a, **k))[1]
    model.llm.layers[0].attn = wrapper
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, eos_token_id=[]), expected)
    assert wrapper.calls == 4  # prefill + 3 decode steps, each through the cached C++ attention


def test_a_replaced_mlp_runs_instead_of_the_cpp_one():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    original = model.llm.layers[1].mlp
    model.llm.layers[1].mlp = Doubled(original)
    doubled = logits(model, inputs)
    assert model.llm.layers[1].mlp.calls == 1
    model.llm.layers[1].mlp = original
    with torch.no_grad():
        original.down_proj.weight.mul_(2.0)  # no bias: doubling down_proj doubles the MLP
    assert (logits(model, inputs) - doubled).abs().max().item() <= 1e-4
    assert (doubled - before).abs().max().item() > 1e-3


def test_a_norm_replaced_by_a_torch_module_runs_in_its_place():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    norm = model.llm.layers[0].mlp_norm
    replacement = torch.nn.RMSNorm(128, eps=model.config["llm"]["rms_eps"])
    with torch.no_grad():
        replacement.weight.copy_(norm.weight)
    model.llm.layers[0].mlp_norm = replacement
    assert (logits(model, inputs) - before).abs().max().item() <= 1e-4
    with torch.no_grad():
        replacement.weight.mul_(0.5)
    assert (logits(model, inputs) - before).abs().max().item() > 1e-3


def test_transformers_names_reach_the_same_blocks():
    model = build()
    layer = model.llm.layers[0]
    assert layer.self_attn is layer.attn
    assert layer.input_layernorm is layer.attn_norm and layer.post_attention_layernorm is layer.mlp_norm
    assert "llm.layers.0.self_attn" not in dict(model.named_modules())  # an alias, not a second module


# ---- autograd
@pytest.mark.parametrize("path", ["llm.layers.0.attn", "llm.layers.0.mlp", "llm.layers.0.attn_norm", "llm.norm"])
def test_gradients_through_an_inner_view_match_finite_differences(path):
    model = build(dtype=torch.float64)
    hidden = torch.randn(1, 4, 128, dtype=torch.float64, requires_grad=True)
    view = model.get_submodule(path)
    assert torch.autograd.gradcheck(lambda h: view(h), (hidden,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_gradients_through_the_gated_cross_attention_view_reach_hidden_visual_and_gates():
    model = build("flamingo-micro", dtype=torch.float64)
    block = model.fusion.blocks[0]
    visual_width = _visual_width(block)
    hidden = torch.randn(1, 3, 128, dtype=torch.float64, requires_grad=True)
    visual = torch.randn(1, 4, visual_width, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, v: block(h, v), (hidden, visual), eps=1e-6, atol=1e-5, fast_mode=True)
    block(hidden, visual).sum().backward()
    assert block.attn_gate.grad is not None and block.attn_gate.grad.abs().sum() > 0


def test_gradients_with_inner_hooks_equal_the_fused_gradients():
    def add_hooks(model):
        layer = model.llm.layers[0]
        for block in (layer.attn, layer.mlp, layer.attn_norm, layer.mlp_norm, model.llm.norm, model.head):
            block.register_forward_hook(lambda m, args, out: out * 1.0)
    assert_hooks_keep_the_fused_gradients(add_hooks)


# ---- Flamingo's gated cross-attention blocks
def test_a_gated_cross_attention_block_alone_reads_all_images_without_a_media_mask():
    model = build("flamingo-micro")
    block = model.fusion.blocks[0]
    hidden = torch.randn(2, 3, 128)
    visual = torch.randn(4, 5, _visual_width(block))  # two images per row
    with torch.no_grad():
        everything = block(hidden, visual)
        masked = block(hidden, visual, torch.ones(2, 3, 2, dtype=torch.bool))
        first_only = block(hidden, visual, torch.tensor([True, False]).expand(2, 3, 2))
        first_alone = block(hidden, visual.view(2, 2, 5, -1)[:, 0])
    assert (everything - masked).abs().max().item() <= 1e-6
    assert (first_only - first_alone).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="media_mask: expected"):
        block(hidden, visual, torch.ones(2, 3, 3, dtype=torch.bool))


def _visual_width(block) -> int:
    return (block.k_proj if "k_proj" in block._modules else block.kv_proj).in_features


def test_a_pre_hook_zeroing_the_media_of_a_cross_attention_block_changes_forward_and_generate_alike():
    model = build("flamingo-micro")
    inputs = batch_for(model)
    before = logits(model, inputs)
    seen = []
    block = model.fusion.blocks[0]
    block.register_forward_pre_hook(lambda m, args: seen.append(args[2].shape) or (args[0], args[1] * 0.0, args[2]))
    hooked = logits(model, inputs)
    assert (hooked - before).abs().max().item() > 1e-4
    assert seen[0][:2] == inputs["input_ids"].shape
    tokens = model.generate(**inputs, max_new_tokens=2, eos_token_id=[])
    assert torch.equal(tokens[:, -2], hooked[:, -1].argmax(-1))


# ---- the call a hook holds
def test_a_block_call_kept_past_its_block_refuses_to_run():
    model = build()
    kept = []
    model.llm.layers[0].mlp.register_forward_pre_hook(lambda m, args: kept.append(m._calls[-1]))
    logits(model, batch_for(model))
    with pytest.raises(ValueError, match="has returned"):
        kept[0]([torch.zeros(1, 2, 128)])


def test_a_hook_returning_something_else_than_a_tensor_is_named():
    model = build()
    model.llm.layers[0].mlp.register_forward_hook(lambda m, args, out: (out,))
    with pytest.raises(TypeError, match=r"llm\.layers\.0\.mlp: .*tuple"):
        logits(model, batch_for(model))
