"""llm kind "opt" alone (vision "none"): a Hugging Face OPTForCausalLM folder loads and gives transformers'
logits and greedy tokens, on a left-padded batch."""
from __future__ import annotations

import json

import pytest
import torch

import vlmzoo
from blip2_fixtures import OPT_PAD, make_hf_opt, text_batch

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_opt")
    return folder, make_hf_opt(folder)


def real_positions_max_diff(a, b, mask):
    # Leading padding rows attend to nothing in transformers (their values differ between its own
    # attention backends); every real position is compared.
    return (a.float() - b.float())[mask.bool()].abs().max().item()


@pytest.mark.parametrize("fused", [True, False])
def test_logits_match_transformers_on_a_left_padded_batch(checkpoint, fused):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    assert model.config["llm"]["kind"] == "opt" and model.config["vision"]["kind"] == "none"
    input_ids, mask = text_batch()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask).logits
        actual = model(input_ids=input_ids, attention_mask=mask).logits
    assert actual.shape == expected.shape
    assert expected.abs().max() > 0.1
    assert real_positions_max_diff(actual, expected, mask) <= 1e-4


def test_logits_without_a_mask_match(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, _ = text_batch(lengths=(7, 7), seed=5)
    with torch.no_grad():
        expected = reference(input_ids=input_ids).logits
        actual = model(input_ids=input_ids).logits
    assert (actual - expected).abs().max().item() <= 1e-4


def test_greedy_generate_gives_transformers_tokens(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask = text_batch(seed=2)
    expected = reference.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                                  eos_token_id=None, pad_token_id=OPT_PAD)
    actual = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    assert actual.shape == (2, input_ids.shape[1] + 16)
    assert torch.equal(actual, expected)


def test_projected_word_embeddings_untied_head_and_no_biases_match(tmp_path):
    # word_embed_proj_dim != hidden_size: project_in / project_out around the decoder (as opt-350m);
    # enable_bias false: linear layers without biases (the layer norms keep theirs).
    reference = make_hf_opt(tmp_path, seed=3, word_embed_proj_dim=48, tie=False, enable_bias=False)
    model = vlmzoo.from_pretrained(tmp_path)
    llm = model.config["llm"]
    assert llm["word_embed_dim"] == 48 and not llm["tie_embeddings"] and not llm["enable_bias"]
    assert model.num_parameters() == sum(p.numel() for p in reference.parameters())
    assert "llm.project_in.weight" in dict(model.named_parameters())
    input_ids, mask = text_batch(seed=4)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask).logits
        actual = model(input_ids=input_ids, attention_mask=mask).logits
    assert real_positions_max_diff(actual, expected, mask) <= 1e-4
    generated = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[])
    assert torch.equal(generated, reference.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8,
                                                     do_sample=False, eos_token_id=None, pad_token_id=OPT_PAD))


def test_parameter_count_equals_transformers(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    # transformers counts the tied lm_head once, as the embeddings.
    assert model.num_parameters() == sum(p.numel() for p in reference.parameters())


def test_post_layer_norm_opt_is_refused_by_name(tmp_path, checkpoint):
    folder, _ = checkpoint
    import shutil

    shutil.copytree(folder, tmp_path / "post_ln", dirs_exist_ok=True)
    config = json.loads((tmp_path / "post_ln" / "config.json").read_text())
    config["do_layer_norm_before"] = False
    (tmp_path / "post_ln" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json do_layer_norm_before: false .*not supported"):
        vlmzoo.from_pretrained(tmp_path / "post_ln")


def test_positions_past_max_positions_are_a_clear_error(checkpoint):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    too_long = torch.randint(4, 90, (1, 70))  # max_position_embeddings is 64
    with pytest.raises(ValueError, match=r"llm.max_positions 64"):
        model(input_ids=too_long)


def test_opt_config_errors_name_the_field():
    base = {"family": "blip2", "vision": {"kind": "none"}, "abstractor": {"kind": "identity"},
            "fusion": {"kind": "splice", "image_token_id": -1}}
    with pytest.raises(ValueError, match=r"llm.heads.*does not divide llm.hidden 60"):
        vlmzoo.build({**base, "llm": {"kind": "opt", "vocab": 50, "hidden": 60, "heads": 8, "layers": 1}})
    with pytest.raises(ValueError, match=r"llm.pad_token_id.*outside the vocabulary"):
        vlmzoo.build({**base, "llm": {"kind": "opt", "vocab": 1, "hidden": 8, "heads": 2, "layers": 1,
                                      "bos_token_id": 0, "eos_token_id": 0}})


def test_padding_between_real_tokens_matches_at_every_position(checkpoint):
    # BLIP-2's processor puts the padding after the image tokens, before the text: those padding
    # queries see the real keys before them (not themselves), as in transformers.
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, _ = text_batch(seed=6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 1, 1]])
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask).logits
        actual = model(input_ids=input_ids, attention_mask=mask).logits
    assert (actual - expected).abs().max().item() <= 1e-4


def test_the_fused_switch_reaches_the_cpp_blocks(checkpoint):
    # model.fused = False must route every block to the plain-ATen references: no torch.ops.vlmzoo
    # kernel runs (a Python-side attribute alone would leave the C++ blocks fused).
    from torch.profiler import profile

    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask = text_batch()
    kernels = {}
    for fused in (True, False):
        model.fused = fused
        assert model.fused is fused
        with profile() as trace, torch.no_grad():
            model(input_ids=input_ids, attention_mask=mask)
        kernels[fused] = {e.name for e in trace.events() if e.name.startswith("vlmzoo::")}
    assert {"vlmzoo::attention", "vlmzoo::layer_norm"} <= kernels[True]
    assert kernels[False] == set()


@pytest.mark.parametrize("word_embed_proj_dim", [None, 48])
def test_flops_count_every_matmul_of_the_reference(tmp_path, word_embed_proj_dim):
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    reference = make_hf_opt(tmp_path, seed=8, word_embed_proj_dim=word_embed_proj_dim)
    model = vlmzoo.from_pretrained(tmp_path)
    reference = copy.deepcopy(reference)
    reference.set_attn_implementation("eager")  # attention as matmuls, which the counter sees
    input_ids, _ = text_batch(lengths=(11,), seed=9)
    with FlopCounterMode(display=False) as counter:
        reference(input_ids=input_ids)
    assert model._module.forward_flops(11, 0)["llm"] == counter.get_total_flops()
