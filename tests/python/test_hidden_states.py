"""output_hidden_states and output_attentions: every hidden state (the LM's, and the vision tower's where
transformers returns them) and every attention map equals transformers' on the tiny random LLaVA, BLIP-2,
Fuyu and IDEFICS models; gradients flow through them; nothing is collected unless asked."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from blip2_fixtures import blip2_batch, make_hf_blip2
from flamingo_fixtures import interleaved_batch, make_hf_idefics
from fuyu_fixtures import fuyu_batch, make_hf_fuyu
from hf_fixtures import llava_batch, make_hf_llava

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_llava_states")
    return folder, make_hf_llava(folder)


def states_max_diff(actual, expected, mask=None):
    """Largest difference over a tuple of [batch, tokens, ...] tensors (real tokens only when mask is given)."""
    assert len(actual) == len(expected)
    worst = 0.0
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        d = (a.float() - e.float()).abs()
        worst = max(worst, (d[mask.bool()] if mask is not None else d).max().item())
    return worst


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_llava_hidden_states_match_transformers(llava, fused):
    folder, reference = llava
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_hidden_states=True)
        actual = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_hidden_states=True)
    assert len(actual.hidden_states) == model.config["llm"]["layers"] + 1
    assert states_max_diff(actual.hidden_states, expected.hidden_states, mask) <= TOLERANCE
    # The last one is after the final norm: the logits are the head applied to it.
    assert torch.allclose(actual.logits, actual.hidden_states[-1] @ model.llm.lm_head.weight.T, atol=1e-5)
    vision = expected.image_outputs.hidden_states
    assert len(actual.vision_hidden_states) == len(vision) == model.config["vision"]["layers"] + 1
    assert states_max_diff(actual.vision_hidden_states, vision) <= TOLERANCE
    projected = torch.stack(list(expected.image_outputs.pooler_output))  # transformers 5: one [V, D] per image
    assert states_max_diff([actual.image_hidden_states], [projected]) <= TOLERANCE


def test_llava_attentions_match_transformers_eager(llava):
    folder, reference = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16, seed=5)
    reference.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            expected = reference(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_attentions=True)
            actual = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_attentions=True)
    finally:
        reference.set_attn_implementation("sdpa")
    assert actual.hidden_states is None
    assert len(actual.attentions) == len(expected.attentions) == model.config["llm"]["layers"]
    real = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]  # real queries and keys
    for a, e in zip(actual.attentions, expected.attentions):
        assert a.shape == e.shape == (2, model.config["llm"]["heads"], input_ids.shape[1], input_ids.shape[1])
        assert (a - e).abs().masked_select(real.expand_as(a)).max().item() <= TOLERANCE
        assert torch.allclose(a.sum(-1)[mask.bool()[:, None].expand(-1, a.shape[1], -1)], torch.ones(1), atol=1e-5)
    # The logits are the same as without attentions (that call ran the fused kernels).
    with torch.no_grad():
        plain = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask).logits
    assert (plain - actual.logits).abs().max().item() <= TOLERANCE


def test_nothing_is_collected_unless_asked(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask)
    assert out.hidden_states is None and out.attentions is None and out.vision_hidden_states is None
    assert len(out) == 1  # unpacking stays (logits,) as before


def test_return_dict_false_gives_transformers_tuple_order(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    labels = input_ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, labels=labels,
                    output_hidden_states=True, output_attentions=True)
        as_tuple = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, labels=labels,
                         output_hidden_states=True, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 6
    loss, logits, hidden, attentions, image_hidden, vision_hidden = as_tuple
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    assert len(hidden) == len(out.hidden_states) and len(attentions) == len(out.attentions)
    assert torch.equal(image_hidden, out.image_hidden_states)
    assert len(vision_hidden) == len(out.vision_hidden_states)
    with torch.no_grad():
        plain = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, return_dict=False)
    # (out ran the reference attention for its attentions: the same logits up to float rounding)
    assert isinstance(plain, tuple) and len(plain) == 1 and torch.allclose(plain[0], out.logits, atol=1e-4)


def test_gradients_flow_through_hidden_states(llava):
    folder, _ = llava
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels = llava_batch(tokens_per_image=16)
    out = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_hidden_states=True)
    out.hidden_states[1].pow(2).sum().backward()  # layer 0's output: reads layer 0 and what is below it
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["llm.layers.0.attn.q_proj.weight"].abs().sum() > 0
    assert grads["llm.embed_tokens.weight"].abs().sum() > 0
    assert any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if name.startswith("abstractor."))
    assert all(g is None or g.abs().sum() == 0 for name, g in grads.items() if name.startswith("llm.layers.1."))
    model.zero_grad()
    vision = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, output_hidden_states=True)
    vision.vision_hidden_states[1].sum().backward()
    assert model.get_parameter("vision.layers.0.attn.q_proj.weight").grad.abs().sum() > 0


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_blip2_opt_hidden_states_match_transformers(tmp_path, fused):
    reference = make_hf_blip2(tmp_path, text="opt")
    model = vlmzoo.from_pretrained(tmp_path)
    model.fused = fused
    input_ids, mask, pixels = blip2_batch("opt")
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
        actual = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
        # transformers 5.24's Blip2ForConditionalGeneration leaves vision_outputs.hidden_states None: its tower's own
        vision = reference.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    lm = expected.language_model_outputs.hidden_states
    assert len(actual.hidden_states) == len(lm) == model.config["llm"]["layers"] + 1
    assert states_max_diff(actual.hidden_states, lm, mask) <= TOLERANCE
    assert len(actual.vision_hidden_states) == len(vision) == model.config["vision"]["layers"] + 1
    assert states_max_diff(actual.vision_hidden_states, vision) <= TOLERANCE


def test_fuyu_hidden_states_match_transformers(tmp_path):
    reference = make_hf_fuyu(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    input_ids, mask, _, patches, _ = fuyu_batch()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=torch.cat(patches), attention_mask=mask,
                             output_hidden_states=True)
        actual = model(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask,
                       output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == model.config["llm"]["layers"] + 1
    assert states_max_diff(actual.hidden_states, expected.hidden_states, mask) <= TOLERANCE
    assert actual.vision_hidden_states is None  # Fuyu's patches go through one linear: no tower states


def test_idefics_hidden_states_match_transformers(tmp_path):
    reference = make_hf_idefics(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    input_ids, mask, pixels, image_mask = interleaved_batch()
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    with torch.no_grad():
        expected = reference(**inputs, output_hidden_states=True)
        actual = model(**inputs, output_hidden_states=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == model.config["llm"]["layers"] + 1
    assert states_max_diff(actual.hidden_states, expected.hidden_states, mask) <= TOLERANCE
