"""The views of the C++ blocks are real modules: each callable block (vision, abstractor, LM layer, Linear)
runs its C++ block with autograd; forward hooks, pre-hooks and replacements on them take effect in the
model's forward and generate, as torch does; with none the fused C++ forward runs untouched."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlmzoo
from test_slot_kinds import batch_for

MICRO = "llava-1.5-micro"
# The decoder families; Flamingo's gates start closed (tanh(0) = 0: the plain LM), so they are opened.
FAMILIES = ["llava-1.5-micro", "blip2-opt-micro", "fuyu-micro", "flamingo-micro"]


def build(preset: str = MICRO, **kwargs) -> vlmzoo.Model:
    torch.manual_seed(0)
    model = vlmzoo.build(preset, **kwargs).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("fusion.") and "gate" in name:
                p.fill_(0.7)
    return model


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ---- callable views
def test_lm_layers_are_indexable_iterable_and_sized():
    model = build()
    layers = model.llm.layers
    assert len(layers) == model.config["llm"]["layers"] == 2
    assert layers[0] is layers._modules["0"] and layers[-1] is layers._modules["1"]
    assert list(layers) == [layers[0], layers[1]]
    assert isinstance(model.llm.layers[0].attn.q_proj, torch.nn.Linear)


def test_vision_then_abstractor_views_equal_encode_images():
    model = build()
    pixels = batch_for(model)["pixel_values"]
    with torch.no_grad():
        features = model.vision(pixels)
        visual = model.abstractor(features)
        expected = model.encode_images(pixels)
    assert features.shape[:2] == (2, 64)
    assert (visual - expected).abs().max().item() <= 1e-5


def test_linear_view_is_x_w_transposed_plus_b():
    model = build()
    q = model.llm.layers[0].attn.q_proj
    x = torch.randn(3, 5, q.in_features)
    assert (q(x) - F.linear(x, q.weight, q.bias)).abs().max().item() <= 1e-6
    assert q.out_features == q.weight.shape[0]


def test_a_layer_view_called_alone_gives_what_the_layer_gave_inside_forward():
    model = build()
    inputs = batch_for(model)
    seen = {}
    model.llm.layers[1].register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        model(**inputs)
        alone = model.llm.layers[1](seen["x"])  # no padding: the forward's mask and positions are the defaults
    assert seen["y"].shape == seen["x"].shape == (2, inputs["input_ids"].shape[1], 128)
    assert (alone - seen["y"]).abs().max().item() <= 1e-5
    assert (alone - seen["x"]).abs().max().item() > 1e-3  # the layer did something


def test_a_layer_view_reads_the_attention_mask_it_is_given():
    model = build()
    hidden = torch.randn(1, 6, 128)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        padded = model.llm.layers[0](hidden, attention_mask=mask, position_ids=torch.tensor([[0, 0, 0, 1, 2, 3]]))
        unpadded = model.llm.layers[0](hidden[:, 2:])
    assert (padded[:, 2:] - unpadded).abs().max().item() <= 1e-5


def test_gradients_through_a_layer_view_match_finite_differences():
    model = build(dtype=torch.float64)
    hidden = torch.randn(1, 4, 128, dtype=torch.float64, requires_grad=True)
    layer = model.llm.layers[0]
    assert torch.autograd.gradcheck(lambda h: layer(h), (hidden,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_gradients_through_vision_view_reach_pixels_and_weights_as_finite_differences():
    model = build(dtype=torch.float64)
    pixels = torch.randn(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    weight = model.vision.layers[0].mlp.fc1.weight
    out = model.abstractor(model.vision(pixels)).square().sum()
    out.backward()
    direction = torch.randn_like(pixels)
    eps = 1e-6
    with torch.no_grad():
        plus = model.abstractor(model.vision(pixels + eps * direction)).square().sum()
        minus = model.abstractor(model.vision(pixels - eps * direction)).square().sum()
    numeric = (plus - minus) / (2 * eps)
    assert abs((pixels.grad * direction).sum().item() - numeric.item()) <= 1e-5 * max(1.0, abs(numeric.item()))
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_a_view_that_is_not_callable_says_which_are():
    model = build()
    with pytest.raises(RuntimeError, match="llm.embed_tokens .*callable blocks are vision, abstractor"):
        model.llm.embed_tokens(torch.tensor([[1, 2]]))


# ---- hooks in forward and generate
def test_a_hook_zeroing_the_abstractor_output_changes_the_logits_and_removing_it_restores_them():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    handle = model.abstractor.register_forward_hook(lambda m, args, out: torch.zeros_like(out))
    zeroed = logits(model, inputs)
    handle.remove()
    after = logits(model, inputs)
    assert (zeroed - before).abs().max().item() > 1e-3
    assert torch.equal(after, before)
    assert not model._blocks.installed  # nothing hooked: the fused C++ forward again


def test_zeroing_the_abstractor_by_hook_equals_splicing_zero_visual_tokens():
    model = build()
    inputs = batch_for(model)
    model.abstractor.register_forward_hook(lambda m, args, out: torch.zeros_like(out))
    hooked = logits(model, inputs)
    zero_linear = torch.nn.Module()  # a replacement abstractor returning zeros is the same model
    zero_linear.forward = lambda features: torch.zeros(features.shape[0], model.visual_tokens_per_image, 128)
    other = build()
    other.abstractor = zero_linear
    assert (logits(other, inputs) - hooked).abs().max().item() <= 1e-5


def test_hooks_see_the_blocks_real_inputs_and_outputs():
    model = build()
    inputs = batch_for(model)
    seen = {}
    model.vision.register_forward_pre_hook(lambda m, args: seen.update(pixels=args[0]))
    model.abstractor.register_forward_hook(lambda m, args, out: seen.update(features=args[0], visual=out))
    model.llm.layers[0].attn.q_proj.register_forward_hook(lambda m, args, out: seen.update(q_in=args[0], q_out=out))
    logits(model, inputs)
    assert seen["pixels"] is inputs["pixel_values"]
    with torch.no_grad():
        assert (seen["features"] - model.vision(inputs["pixel_values"])).abs().max() <= 1e-5
        assert (seen["visual"] - model.encode_images(inputs["pixel_values"])).abs().max() <= 1e-5
        q = model.llm.layers[0].attn.q_proj
        assert (seen["q_out"] - F.linear(seen["q_in"], q.weight, q.bias)).abs().max() <= 1e-5
    assert seen["q_in"].shape == (2, inputs["input_ids"].shape[1], 128)


def test_a_pre_hook_returning_new_inputs_replaces_them():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    handle = model.llm.layers[1].register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    halved = logits(model, inputs)
    handle.remove()
    assert (halved - before).abs().max().item() > 1e-3


def test_identity_hooks_everywhere_give_the_fused_logits_and_tokens():
    model = build()
    inputs = batch_for(model)
    fused_logits = logits(model, inputs)
    fused_tokens = model.generate(**inputs, max_new_tokens=4, eos_token_id=[])
    for name, module in model.named_modules():
        if name in ("vision", "abstractor") or name.startswith("llm.layers.") and name.count(".") == 2 \
                or isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, args, out: out)
    assert len(model._blocks.installed) == 0  # installed lazily, at the next call
    hooked_logits = logits(model, inputs)
    assert len(model._blocks.installed) > 20
    assert (hooked_logits - fused_logits).abs().max().item() <= 1e-5
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, eos_token_id=[]), fused_tokens)


def test_hooks_fire_in_generate_at_prefill_and_each_decode_step():
    model = build()
    inputs = batch_for(model)
    shapes = []
    model.llm.layers[0].register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    model.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    prompt = inputs["input_ids"].shape[1]
    assert shapes == [(2, prompt, 128), (2, 1, 128), (2, 1, 128)]


def test_a_hook_changing_a_layer_output_changes_generated_tokens_consistently_with_forward():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    model.llm.layers[1].register_forward_hook(lambda m, args, out: out.flip(-1))
    tokens = model.generate(**inputs, max_new_tokens=1, eos_token_id=[])
    hooked = logits(model, inputs)
    assert (hooked - before).abs().max().item() > 1e-2
    assert torch.equal(tokens[:, -1], hooked[:, -1].argmax(-1))


# ---- replacement
class Doubled(torch.nn.Module):
    """Wraps a block: runs it, doubles its output, counts calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs) * 2.0


def test_a_replaced_linear_runs_instead_of_the_cpp_one():
    model = build()
    inputs = batch_for(model)
    before = logits(model, inputs)
    original = model.llm.layers[0].mlp.down_proj
    model.llm.layers[0].mlp.down_proj = Doubled(original)
    doubled = logits(model, inputs)
    assert model.llm.layers[0].mlp.down_proj.calls == 1
    # the same as doubling the weights in C++
    model.llm.layers[0].mlp.down_proj = original
    with torch.no_grad():
        original.weight.mul_(2.0)
    assert (logits(model, inputs) - doubled).abs().max().item() <= 1e-4
    assert (doubled - before).abs().max().item() > 1e-3


def test_a_replaced_layer_runs_in_generate_with_the_forwards_caches():
    model = build()
    inputs = batch_for(model)
    expected = model.generate(**inputs, max_new_tokens=4, eos_token_id=[])
    wrapper = Doubled(model.llm.layers[1])
    wrapper.forward = lambda *a, **k: (setattr(wrapper, "calls", wrapper.calls + 1), wrapper.inner(*a, **k))[1]
    model.llm.layers[1] = wrapper
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, eos_token_id=[]), expected)
    assert wrapper.calls == 4  # prefill + 3 decode steps, each through the cached C++ layer


def test_a_python_adapter_in_a_frozen_vision_tower_still_gets_gradients():
    model = build()
    model.train()
    model.freeze("vision")
    adapter = torch.nn.Linear(128, 128, bias=False)
    torch.nn.init.normal_(adapter.weight, std=0.01)
    fc1 = model.vision.layers[0].mlp.fc1
    model.vision.layers[0].attn.v_proj = LowRank(model.vision.layers[0].attn.v_proj, adapter)
    inputs = batch_for(model)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert fc1.weight.grad is None


class LowRank(torch.nn.Module):
    def __init__(self, base, adapter):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, x):
        return self.base(x) + self.adapter(x)


def assert_hooks_keep_the_fused_gradients(add_hooks) -> None:
    """The loss gradients of the micro LLaVA with identity hooks from add_hooks(model) equal those without."""
    inputs = None
    grads = []
    for hooked in (False, True):
        model = build().train()
        inputs = inputs or batch_for(model)
        if hooked:
            add_hooks(model)
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 30
    for name in grads[0]:
        assert (grads[0][name] - grads[1][name]).abs().max().item() <= 1e-5, name


def test_gradients_with_hooks_equal_the_fused_gradients():
    def add_hooks(model):
        model.llm.layers[0].register_forward_hook(lambda m, args, out: out + 0.0)
        model.abstractor.register_forward_hook(lambda m, args, out: out * 1.0)
        model.llm.layers[1].attn.v_proj.register_forward_hook(lambda m, args, out: out)
    assert_hooks_keep_the_fused_gradients(add_hooks)


def test_a_hook_on_a_block_the_forward_cannot_call_back_into_raises_naming_it():
    model = build()
    model.llm.embed_tokens.register_forward_hook(lambda m, args, out: out)
    with pytest.raises(NotImplementedError, match=r"llm\.embed_tokens .*hooked"):
        model(**batch_for(model))


# ---- every decoder family
@pytest.mark.parametrize("preset", FAMILIES)
def test_family_hooks_on_every_callable_block_keep_the_logits_and_a_zeroing_hook_changes_them(preset):
    model = build(preset)
    inputs = batch_for(model)
    fused = logits(model, inputs)
    calls = []
    for name, module in model.named_modules():
        if name in ("vision", "abstractor") or isinstance(module, torch.nn.Linear) \
                or (name.startswith("llm.layers.") and name.count(".") == 2):
            module.register_forward_hook(lambda m, args, out, name=name: calls.append(name) or out)
    assert (logits(model, inputs) - fused).abs().max().item() <= 1e-5
    fired = set(calls)
    assert {"vision", "abstractor", "llm.layers.0", "llm.layers.1"} <= fired
    assert any(n.startswith("llm.layers.0.") for n in fired)  # the layers' Linears
    # not zeros: Flamingo's bias-free cross-attention over zero visual tokens adds nothing
    handle = model.abstractor.register_forward_hook(lambda m, args, out: out * 2.0 + 1.0)
    assert (logits(model, inputs) - fused).abs().max().item() > 1e-4
    handle.remove()
    with torch.no_grad():
        features = model.vision(inputs["pixel_values"])
        assert (model.abstractor(features, *(inputs[k] for k in ("qformer_input_ids",) if k in inputs))
                - model.encode_images(inputs["pixel_values"])).abs().max() <= 1e-5


# ---- the other assemblies
def test_dual_encoder_runs_a_hooked_linear_view_and_refuses_a_hooked_tower():
    from test_dual_encoder_kinds import batch_for as dual_batch
    torch.manual_seed(0)
    model = vlmzoo.build("clip-tiny").eval()
    inputs = dual_batch(model)
    with torch.no_grad():
        before = model(**inputs).text_embeds
    name, linear = next((n, m) for n, m in model.named_modules()
                        if n.startswith("llm.") and isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda m, args, out: out * 0.0)
    with torch.no_grad():
        zeroed = model(**inputs).text_embeds
    handle.remove()
    assert (zeroed - before).abs().max().item() > 1e-3, name
    model.vision.register_forward_hook(lambda m, args, out: out)
    with pytest.raises(NotImplementedError, match="vision .*hooked"):
        model(**inputs)


def test_multiway_encoder_refuses_any_hook_rather_than_ignoring_it():
    torch.manual_seed(0)
    model = vlmzoo.build("beit3-micro").eval()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, args, out: out * 0.0)
    with pytest.raises(NotImplementedError, match="cannot|none"):
        model(input_ids=torch.randint(5, 60, (1, 4)))


def test_a_hooked_model_is_freed_when_dropped():
    import gc
    import weakref
    model = build()
    model.llm.layers[0].attn.q_proj.register_forward_hook(lambda m, args, out: out)
    model.llm.layers[1].register_forward_hook(lambda m, args, out: out)
    logits(model, batch_for(model))
    assert model._blocks.installed
    ref = weakref.ref(model._blocks)
    del model
    gc.collect()
    assert ref() is None  # no cycle through the C++ callbacks
