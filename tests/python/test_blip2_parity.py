"""BLIP-2 and InstructBLIP parity: Hugging Face folders (OPT and Llama language models) load, and give
transformers' logits at every position of input_ids and its greedy tokens, on a padded batch laid out
as transformers' processors lay it out."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlmzoo
from blip2_fixtures import IMAGE_TOKEN, QUERIES, blip2_batch, make_hf_blip2, qformer_batch

transformers = pytest.importorskip("transformers")

CASES = {
    "blip2-opt": dict(text="opt"),
    "blip2-llama": dict(text="llama"),
    "instructblip-llama": dict(text="llama", instruct=True),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    spec = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    return spec, folder, make_hf_blip2(folder, **spec)


def model_inputs(spec, seed=1, **batch):
    input_ids, mask, pixels = blip2_batch(spec["text"], seed=seed, **batch)
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)
    if spec.get("instruct"):
        qformer_ids, qformer_mask = qformer_batch(seed=seed + 1)
        inputs.update(qformer_input_ids=qformer_ids, qformer_attention_mask=qformer_mask)
    return inputs


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_float32_logits_match_transformers_at_every_position(case, fused):
    spec, folder, reference = case
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    inputs = model_inputs(spec)
    assert (inputs["attention_mask"] == 0).any()  # padding between the image tokens and the text
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = model(**inputs).logits
    assert actual.shape == expected.shape == (*inputs["input_ids"].shape, reference.config.text_config.vocab_size)
    assert expected.abs().max() > 0.1  # a real signal, not all zeros
    assert (actual - expected).abs().max().item() <= 1e-4


def test_greedy_generate_gives_transformers_tokens(case):
    spec, folder, reference = case
    model = vlmzoo.from_pretrained(folder)
    inputs = model_inputs(spec, seed=3)
    pad = reference.config.text_config.pad_token_id
    expected = reference.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=pad)
    actual = model.generate(**inputs, max_new_tokens=16, eos_token_id=[])
    assert actual.shape == (2, inputs["input_ids"].shape[1] + 16)
    assert torch.equal(actual, expected)


def test_loaded_model_has_the_slots_and_parameters_of_the_checkpoint(case):
    spec, folder, reference = case
    model = vlmzoo.from_pretrained(folder)
    config = model.config
    assert (config["vision"]["kind"], config["abstractor"]["kind"], config["llm"]["kind"]) == (
        "eva_vit", "qformer", spec["text"])
    assert config["abstractor"]["instruction"] == bool(spec.get("instruct"))
    assert model.visual_tokens_per_image == QUERIES and model.image_token_id == IMAGE_TOKEN
    assert model.num_parameters() == transformers_parameters(reference)


def transformers_parameters(reference) -> int:
    # transformers 5.x holds the ViT's attention bias as one fused qkv.bias whose key third is a
    # constant zero (softmax ignores it); vision kind eva_vit holds the q and v biases only, as the
    # original checkpoints and transformers 4.x do.
    vision = reference.config.vision_config
    return sum(p.numel() for p in reference.parameters()) - vision.num_hidden_layers * vision.hidden_size


def test_wrong_number_of_image_tokens_for_the_queries_is_a_clear_error(case):
    spec, folder, _ = case
    model = vlmzoo.from_pretrained(folder)
    inputs = model_inputs(spec)
    inputs["input_ids"][1, 0] = 5  # row 1 keeps 5 of its 6 image tokens
    with pytest.raises(ValueError, match=rf"{2 * QUERIES - 1} image tokens .* 2 images x {QUERIES} visual tokens"):
        model(**inputs)


def rewrite_keys(folder, rename):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    save_file({rename(k): v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def composite_layout(key: str) -> str:
    # The layout of transformers' newer composite models: parts under model.*, the head at the top.
    if key.startswith("language_model.lm_head."):
        return key.replace("language_model.lm_head.", "lm_head.")
    if key.startswith("language_model.model."):
        return "model.language_model." + key[len("language_model.model."):]
    return "model." + key


def test_both_key_layouts_load_the_same_weights(case, tmp_path):
    spec, folder, _ = case
    shutil.copytree(folder, tmp_path / "new", dirs_exist_ok=True)
    rewrite_keys(tmp_path / "new", composite_layout)
    old, new = vlmzoo.from_pretrained(folder), vlmzoo.from_pretrained(tmp_path / "new")
    assert len(list(old.named_parameters())) == len(list(new.named_parameters()))
    for (name, a), (_, b) in zip(old.named_parameters(), new.named_parameters()):
        assert torch.equal(a, b), name


def test_a_checkpoint_without_image_token_prepends_the_queries(tmp_path):
    # Folders converted before transformers 4.47 have no image_token_index: the queries go before the
    # text, the mask grows to cover them, and the logits are the text's. Same numbers as the processor
    # layout with the image tokens written out.
    spec = CASES["blip2-opt"]
    reference = make_hf_blip2(tmp_path, seed=4, **spec)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("image_token_index", None)
    config.pop("image_token_id", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = vlmzoo.from_pretrained(tmp_path)
    assert model.image_token_id == -1
    inputs = model_inputs(spec, seed=5)
    text_only = dict(input_ids=inputs["input_ids"][:, QUERIES:], attention_mask=inputs["attention_mask"][:, QUERIES:],
                     pixel_values=inputs["pixel_values"])
    with torch.no_grad():
        expected = reference(**inputs).logits[:, QUERIES:]
        actual = model(**text_only).logits
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-4
    generated = model.generate(**text_only, max_new_tokens=8, eos_token_id=[])
    expected_tokens = reference.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None,
                                         pad_token_id=reference.config.text_config.pad_token_id)
    assert torch.equal(generated, expected_tokens[:, QUERIES:])


def test_missing_and_unexpected_language_model_weights_are_named(case, tmp_path):
    spec, folder, _ = case
    shutil.copytree(folder, tmp_path / "broken", dirs_exist_ok=True)
    path = tmp_path / "broken" / "model.safetensors"
    tensors = load_file(path)
    layer = "language_model.model.decoder.layers.1.fc1.weight" if spec["text"] == "opt" else \
        "language_model.model.layers.1.mlp.up_proj.weight"
    del tensors[layer]
    tensors["language_model.model.mystery.weight"] = torch.ones(2)
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(KeyError) as error:
        vlmzoo.from_pretrained(tmp_path / "broken")
    missing = "llm.layers.1.mlp.fc1.weight" if spec["text"] == "opt" else "llm.layers.1.mlp.up_proj.weight"
    assert missing in str(error.value) and "language_model.model.mystery.weight" in str(error.value)


def test_a_flan_t5_blip2_folder_is_refused_naming_what_is_unsupported(tmp_path):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, T5Config

    text = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_decoder_layers=1, num_heads=4)
    config = Blip2Config(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=4, image_size=32, patch_size=8),
                         qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                             intermediate_size=48),
                         text_config=text.to_dict(), num_query_tokens=4, image_token_index=63)
    Blip2ForConditionalGeneration(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"text_config.model_type: 't5' is not supported.*encoder-decoder.*Flan-T5"):
        vlmzoo.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_type,supported", [("blip", "'blip-2'"), ("instructblipvideo", "'instructblip'")])
def test_neighbouring_model_types_are_refused_naming_what_loads(tmp_path, model_type, supported):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ValueError, match=rf"model_type '{model_type}' .*not supported.*{supported}"):
        vlmzoo.from_pretrained(tmp_path)
