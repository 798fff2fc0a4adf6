"""BEiT-3 against torchscale 0.3.0's BEiT3 (multiway on), tiny and random, loaded with
vlmzoo.from_pretrained from a torchscale-layout folder: the last hidden state in the three modes (text
padded), with fused and reference kernels, and each unilm head's outputs."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from beit3_fixtures import beit3_batch, make_beit3

TOL = dict(atol=1e-4, rtol=1e-4)
MODES = ["vision-language", "text", "vision"]


def inputs_for(mode: str):
    ids, mask, pixels = beit3_batch()
    if mode == "text":
        return dict(input_ids=ids, attention_mask=mask)
    if mode == "vision":
        return dict(pixel_values=pixels)
    return dict(input_ids=ids, pixel_values=pixels, attention_mask=mask)


@pytest.fixture(scope="module")
def vqa_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("beit3-vqa")
    reference = make_beit3(folder, head="vqa")
    return reference, vlmzoo.from_pretrained(folder).eval()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("mode", MODES)
def test_last_hidden_state_matches_torchscale(vqa_pair, mode, fused):
    reference, model = vqa_pair
    model.fused = fused
    inputs = inputs_for(mode)
    with torch.no_grad():
        expected = reference.hidden(**inputs)
        ours = model(**inputs).last_hidden_state
    model.fused = True
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, **TOL)


def test_vqa_logits_match_in_the_vision_language_mode(vqa_pair):
    reference, model = vqa_pair
    inputs = inputs_for("vision-language")
    with torch.no_grad():
        expected, ours = reference(**inputs), model(**inputs)
    assert ours.logits.shape == (3, 10)
    torch.testing.assert_close(ours.logits, expected["logits"], **TOL)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_retrieval_head_matches(tmp_path, fused):
    reference = make_beit3(tmp_path, head="retrieval", seed=2)
    model = vlmzoo.from_pretrained(tmp_path).eval()
    model.fused = fused
    assert model.config["head"]["kind"] == "retrieval"
    inputs = inputs_for("vision-language")
    with torch.no_grad():
        expected, ours = reference(**inputs), model(**inputs)
    for name in ("image_embeds", "text_embeds", "logits_per_text"):
        torch.testing.assert_close(ours[name], expected[name], **TOL)
    torch.testing.assert_close(ours.logits_per_image, ours.logits_per_text.t())
    assert ours.last_hidden_state is None  # each modality was encoded alone


def test_image_classification_head_matches(tmp_path):
    reference = make_beit3(tmp_path, head="image_classification", seed=3)
    model = vlmzoo.from_pretrained(tmp_path).eval()
    inputs = inputs_for("vision")
    with torch.no_grad():
        expected, ours = reference(**inputs), model(**inputs)
    torch.testing.assert_close(ours.logits, expected["logits"], **TOL)


def test_a_backbone_without_head_loads_with_a_fresh_head(tmp_path):
    reference = make_beit3(tmp_path, head=None, seed=4)
    model = vlmzoo.from_pretrained(tmp_path).eval()
    inputs = inputs_for("vision-language")
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, reference.hidden(**inputs), **TOL)


def test_exported_state_dict_loads_into_torchscale(vqa_pair):
    from beit3_fixtures import Beit3Task
    from vlmzoo.families.beit3 import encoder_config_of, to_torchscale

    _, model = vqa_pair
    torch.manual_seed(9)
    fresh = Beit3Task("vqa", **encoder_config_of(model.config)).eval()
    fresh.load_state_dict(to_torchscale(model.state_dict(), "vqa"), strict=True)
    inputs = inputs_for("vision-language")
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs)["logits"], model(**inputs).logits, **TOL)


# ---- errors, each naming what is wrong

def test_a_text_longer_than_the_position_table_is_a_clear_error(vqa_pair):
    _, model = vqa_pair
    with pytest.raises(ValueError, match=r"input_ids: 65 tokens, more than the text position table holds"):
        model(input_ids=torch.ones(1, 65, dtype=torch.long))


def test_an_image_of_the_wrong_size_is_a_clear_error(vqa_pair):
    _, model = vqa_pair
    with pytest.raises(ValueError, match=r"pixel_values: expected \[num_images, 3, 32, 32\] \(vision.channels, vision.image_size\)"):
        model(pixel_values=torch.randn(1, 3, 48, 48))


def test_a_checkpoint_missing_one_experts_weights_names_them(tmp_path):
    make_beit3(tmp_path, head="vqa")
    path = next(tmp_path.glob("*.pth"))
    state = torch.load(path, weights_only=True)
    del state["model"]["beit3.encoder.layers.1.ffn.B.fc2.weight"]
    torch.save(state, path)
    with pytest.raises(KeyError, match=r"missing keys \(1\): llm.layers.1.ffn.B.fc2.weight"):
        vlmzoo.from_pretrained(tmp_path)


def test_a_config_torchscale_builds_otherwise_is_refused_by_field(tmp_path):
    import json

    make_beit3(tmp_path, head="vqa")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, rel_pos_buckets=32, max_rel_pos=128)))
    with pytest.raises(ValueError, match=r"config.json: rel_pos_buckets is 32"):
        vlmzoo.from_pretrained(tmp_path)


def test_a_pth_that_needs_unpickling_code_is_refused(tmp_path):
    import collections

    make_beit3(tmp_path, head="vqa")
    path = next(tmp_path.glob("*.pth"))
    torch.save({"model": collections.Counter(a=1)}, path)  # not tensors: weights_only refuses or the check does
    with pytest.raises(ValueError, match=str(path.name)):
        vlmzoo.from_pretrained(tmp_path)
