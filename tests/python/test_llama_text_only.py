"""A plain Hugging Face Llama folder (LlamaForCausalLM.save_pretrained) loads with vlmzoo.from_pretrained as
a text-only model (vision "none"), as plain OPT folders do: transformers' logits and greedy tokens."""
from __future__ import annotations

import pytest
import torch

import vlmzoo

transformers = pytest.importorskip("transformers")

VOCAB = 96


def make_hf_llama(folder, tie=False, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tie, pad_token_id=0, rms_norm_eps=1e-6, rope_theta=5000.0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return model


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0  # left padding
    return ids, mask


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_llama_folder_loads_text_only_with_transformers_logits(tmp_path, tie):
    reference = make_hf_llama(tmp_path, tie=tie)
    model = vlmzoo.from_pretrained(tmp_path)
    assert model.config["vision"]["kind"] == "none" and model.config["llm"]["kind"] == "llama"
    assert model.config["llm"]["tie_embeddings"] is tie
    assert model.num_parameters() == sum(p.numel() for p in reference.parameters())
    ids, mask = batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        actual = model(input_ids=ids, attention_mask=mask).logits
    assert expected.abs().max() > 0.1
    assert (actual - expected)[mask.bool()].abs().max().item() <= 1e-4


def test_llama_folder_greedy_tokens_match_transformers(tmp_path):
    reference = make_hf_llama(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    ids, mask = batch(seed=2)
    expected = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    actual = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[])
    assert torch.equal(actual, expected)


def test_llama_folder_hidden_states_match_transformers(tmp_path):
    reference = make_hf_llama(tmp_path)
    model = vlmzoo.from_pretrained(tmp_path)
    ids, mask = batch(seed=3)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        actual = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(actual) == len(expected) == 3
    assert max((a - e)[mask.bool()].abs().max().item() for a, e in zip(actual, expected)) <= 1e-4
