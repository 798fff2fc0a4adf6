"""gradient_checkpointing_enable(): each LM layer keeps only its input in forward and runs again in backward;
the gradients are those of the plain backward, and the tensors kept for backward shrink."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from blip2_fixtures import blip2_batch, make_hf_blip2
from hf_fixtures import llava_batch, make_hf_llava

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llava_checkpointing")
    make_hf_llava(folder)
    return folder


def gradients(model, inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100))
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def saved_bytes(model, inputs):
    """Bytes of the tensors autograd keeps for backward during one forward (C++ nodes included)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs).logits.sum()
    return total


def graph_names(tensor):
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def llava_inputs():
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    return dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_llava_gradients_equal_those_without_checkpointing(llava_folder, fused):
    model = vlmzoo.from_pretrained(llava_folder).train()
    model.fused = fused
    inputs = llava_inputs()
    loss, expected = gradients(model, inputs)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checkpointed_loss, actual = gradients(model, inputs)
    assert torch.equal(loss, checkpointed_loss)
    assert expected.keys() == actual.keys() and any(n.startswith("llm.layers.") for n in actual)
    worst = max((actual[n] - expected[n]).abs().max().item() for n in expected)
    assert worst <= 1e-5


def test_checkpointing_recomputes_layers_and_keeps_fewer_tensors(llava_folder):
    model = vlmzoo.from_pretrained(llava_folder).train()
    inputs = llava_inputs()
    plain = saved_bytes(model, inputs)
    assert not any("CheckpointedLayer" in n for n in graph_names(model(**inputs).logits))
    model.gradient_checkpointing_enable()
    checkpointed = saved_bytes(model, inputs)
    assert any("CheckpointedLayer" in n for n in graph_names(model(**inputs).logits))
    assert checkpointed < plain
    model.gradient_checkpointing_disable()
    assert saved_bytes(model, inputs) == plain


def test_checkpointing_is_off_in_eval_and_under_no_grad(llava_folder):
    model = vlmzoo.from_pretrained(llava_folder)
    model.gradient_checkpointing_enable()
    inputs = llava_inputs()
    model.eval()
    assert not any("CheckpointedLayer" in n for n in graph_names(model(**inputs).logits))
    model.train()
    with torch.no_grad():
        assert model(**inputs).logits.grad_fn is None


def test_checkpointing_with_hidden_states_keeps_their_gradients(llava_folder):
    model = vlmzoo.from_pretrained(llava_folder).train()
    inputs = llava_inputs()
    model.zero_grad()
    model(**inputs, output_hidden_states=True).hidden_states[1].sum().backward()
    expected = model.get_parameter("llm.layers.0.mlp.up_proj.weight").grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(**inputs, output_hidden_states=True).hidden_states[1].sum().backward()
    actual = model.get_parameter("llm.layers.0.mlp.up_proj.weight").grad
    assert (actual - expected).abs().max().item() <= 1e-5


def test_blip2_opt_gradients_equal_those_without_checkpointing(tmp_path):
    make_hf_blip2(tmp_path, text="opt")
    model = vlmzoo.from_pretrained(tmp_path).train()
    input_ids, mask, pixels = blip2_batch("opt")
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)
    _, expected = gradients(model, inputs)
    model.gradient_checkpointing_enable()
    _, actual = gradients(model, inputs)
    assert expected.keys() == actual.keys()
    assert max((actual[n] - expected[n]).abs().max().item() for n in expected) <= 1e-5
