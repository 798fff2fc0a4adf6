"""IDEFICS (v1) parity and the Flamingo behaviours: the same weights give transformers' logits and greedy
tokens; gates at zero leave the LM alone; a token never reads a later image; generate computes the visual
keys and values once; bad inputs are named."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from flamingo_fixtures import IMAGE_TOKEN, interleaved_batch, make_hf_idefics
from vlmzoo.families.flamingo.idefics import idefics_config

transformers = pytest.importorskip("transformers")

# Perceiver on (scalar gates, q/k norms) and off (vector gates, no q/k norms).
VARIANTS = {"perceiver": dict(resampler=True), "no-perceiver": dict(resampler=False, alpha_type="vector", qk_norms=False)}


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"hf_idefics_{request.param}")
    reference = make_hf_idefics(folder, **VARIANTS[request.param])
    return folder, reference


def real_positions_max_diff(a, b, mask):
    return (a.float() - b.float())[mask.bool()].abs().max().item()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_float32_logits_match_transformers_on_interleaved_padded_batch(checkpoint, fused):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    input_ids, mask, pixels, image_mask = interleaved_batch()
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = model(**inputs).logits
    assert actual.shape == expected.shape
    assert expected.abs().max() > 0.1
    assert real_positions_max_diff(actual, expected, mask) <= 1e-4


def test_without_image_attention_mask_the_image_tokens_give_the_same_mask(checkpoint):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels, image_mask = interleaved_batch(seed=4)
    with torch.no_grad():
        given = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
        derived = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels)
    assert torch.equal(given.logits, derived.logits)


def test_greedy_generate_gives_transformers_tokens(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels, image_mask = interleaved_batch(seed=2)
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    expected = reference.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
    actual = model.generate(**inputs, max_new_tokens=16, eos_token_id=[])
    assert actual.shape == (2, input_ids.shape[1] + 16)
    assert torch.equal(actual, expected)


def test_exported_folder_loads_in_transformers_with_the_same_logits(checkpoint, tmp_path):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    model.save_pretrained(tmp_path, format="transformers")
    exported = transformers.IdeficsForVisionText2Text.from_pretrained(tmp_path).eval()
    input_ids, mask, pixels, image_mask = interleaved_batch(seed=5)
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    with torch.no_grad():
        assert real_positions_max_diff(exported(**inputs).logits, model(**inputs).logits, mask) <= 1e-4


def test_a_token_never_reads_a_later_image(checkpoint):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, pixels, _ = interleaved_batch(seed=6)
    second = (input_ids[0] == IMAGE_TOKEN).nonzero()[1].item()
    changed = pixels.clone()
    changed[0, 1] = torch.randn_like(changed[0, 1])
    with torch.no_grad():
        before = model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels).logits
        after = model(input_ids=input_ids, attention_mask=mask, pixel_values=changed).logits
    assert torch.equal(before[0, :second], after[0, :second])
    assert not torch.allclose(before[0, second:], after[0, second:])
    assert torch.equal(before[1], after[1])  # the other row has its own images


def test_tokens_before_the_first_image_read_no_image():
    model = vlmzoo.build("idefics-tiny")
    with torch.no_grad():
        for p in model.parameters("fusion"):
            p.normal_(0, 0.5)  # open the gates
    size = model.config["vision"]["image_size"]
    image_token = model.image_token_id
    input_ids = torch.tensor([[1, 7, 8, 9, image_token, 10, 11]])
    pixels = torch.randn(1, 1, 3, size, size)
    with torch.no_grad():
        a = model(input_ids=input_ids, pixel_values=pixels).logits
        b = model(input_ids=input_ids, pixel_values=torch.randn_like(pixels)).logits
    assert torch.equal(a[0, :4], b[0, :4])
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_fresh_gated_blocks_give_exactly_the_logits_of_the_lm_alone():
    model = vlmzoo.build("flamingo-tiny")
    gates = {n: p for n, p in model.named_parameters("fusion") if n.endswith("_gate")}
    assert gates and all(torch.count_nonzero(p) == 0 for p in gates.values())
    lm_only = vlmzoo.build("flamingo-tiny", vision={"kind": "none"}, abstractor={"kind": "identity"},
                           fusion={"kind": "splice", "image_token_id": -1})
    lm_only.load_state_dict({n: p for n, p in model.state_dict().items() if n.startswith("llm.")})
    size = model.config["vision"]["image_size"]
    input_ids = torch.tensor([[1, 9, model.image_token_id, 10, 11, model.image_token_id, 12, 13]])
    with torch.no_grad():
        with_images = model(input_ids=input_ids, pixel_values=torch.randn(1, 2, 3, size, size)).logits
        alone = lm_only(input_ids=input_ids).logits
    assert torch.equal(with_images, alone)


def cross_kv_computations(run) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    return sum(1 for e in profile.events() if e.name == "vlmzoo::cross_attention_kv")


def test_generate_computes_the_visual_keys_and_values_once_per_block():
    model = vlmzoo.build("idefics-tiny")
    blocks = len(list(model.fusion.blocks.children()))
    size = model.config["vision"]["image_size"]
    input_ids = torch.tensor([[1, model.image_token_id, 7, 8]])
    pixels = torch.randn(1, 1, 3, size, size)
    forward = cross_kv_computations(lambda: model(input_ids=input_ids, pixel_values=pixels))
    generate = cross_kv_computations(lambda: model.generate(input_ids=input_ids, pixel_values=pixels,
                                                            max_new_tokens=8, eos_token_id=[]))
    assert forward == blocks > 0
    assert generate == blocks  # not blocks x 8


def test_more_images_than_image_attention_mask_columns_is_named():
    model = vlmzoo.build("idefics-tiny")
    input_ids, mask, pixels, image_mask = interleaved_batch_for(model)
    extra = torch.cat([pixels, pixels[:, :1]], 1)  # 3 images per row, mask has 2 columns
    with pytest.raises(ValueError, match=r"pixel_values: 3 images per row .* image_attention_mask has 2 image columns"):
        model(input_ids=input_ids, attention_mask=mask, pixel_values=extra, image_attention_mask=image_mask)


def test_more_image_tokens_than_images_is_named():
    model = vlmzoo.build("idefics-tiny")
    input_ids, mask, pixels, _ = interleaved_batch_for(model)
    with pytest.raises(ValueError, match=r"input_ids: a row holds 2 images \(runs of fusion.image_token_id .*\) but pixel_values give 1 images per row"):
        model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels[:, :1])


def test_image_attention_mask_of_the_wrong_shape_is_named():
    model = vlmzoo.build("idefics-tiny")
    input_ids, mask, pixels, image_mask = interleaved_batch_for(model)
    with pytest.raises(ValueError, match=r"image_attention_mask: expected \[batch 2, tokens"):
        model(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask[:, 1:])


def interleaved_batch_for(model):
    """interleaved_batch with the preset's image token and image size."""
    input_ids, mask, _, image_mask = interleaved_batch(seed=7)
    input_ids = torch.where(input_ids == IMAGE_TOKEN, model.image_token_id, input_ids)
    input_ids = input_ids.clamp_max(model.config["llm"]["vocab"] - 1)
    size = model.config["vision"]["image_size"]
    return input_ids, mask, torch.randn(2, 2, 3, size, size), image_mask


def test_idefics_9b_preset_counts_what_transformers_builds_from_the_published_config():
    # HuggingFaceM4/idefics-9b config.json: CLIP ViT-H/14 (1280 wide, 32 layers), perceiver 64 x 6 (16 x 96),
    # cross_layer_interval 4, LLaMA-7B, additional_vocab_size 2.
    config = transformers.IdeficsConfig(
        vocab_size=32000, additional_vocab_size=2, cross_layer_interval=4, use_resampler=True,
        vision_config=dict(embed_dim=1280, image_size=224, intermediate_size=5120, patch_size=14, num_hidden_layers=32,
                           num_attention_heads=16, hidden_act="gelu"),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=64, resampler_depth=6, resampler_n_heads=16,
                              resampler_head_dim=96))
    with torch.device("meta"):
        reference = transformers.IdeficsForVisionText2Text(config)
    expected = sum(p.numel() for p in reference.parameters())
    assert vlmzoo.info("idefics-9b")["parameters"]["total"] == expected == 8_929_675_280
    assert vlmzoo.parameter_counts(idefics_config(config.to_dict()))["total"] == expected


def test_deepcopy_and_torch_save_keep_the_logits(tmp_path):
    import copy

    model = vlmzoo.build("idefics-tiny").eval()
    with torch.no_grad():
        for p in model.parameters("fusion"):
            p.normal_(0, 0.3)
    input_ids, mask, pixels, image_mask = interleaved_batch_for(model)
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.no_grad():
        expected = model(**inputs).logits
        assert torch.equal(copy.deepcopy(model)(**inputs).logits, expected)
        assert torch.equal(loaded(**inputs).logits, expected)


def test_a_random_idefics_tiny_exports_to_transformers_auto_class_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = vlmzoo.build("idefics-tiny").eval()
    with torch.no_grad():  # move every weight off its constructor value, gates included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path, format="transformers")
    reference, info = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reference).__name__ == "IdeficsForVisionText2Text"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    input_ids, mask, pixels, image_mask = interleaved_batch_for(model)
    inputs = dict(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, image_attention_mask=image_mask)
    with torch.no_grad():
        expected = reference.eval()(**inputs).logits
        assert real_positions_max_diff(model(**inputs).logits, expected, mask) <= 1e-4
    assert vlmzoo.from_pretrained(tmp_path).config["fusion"] == model.config["fusion"] | {
        "image_token_id": -1}  # a folder without additional vocabulary names no <image> token


def test_what_transformers_idefics_cannot_express_is_refused_by_field(tmp_path):
    model = vlmzoo.build("flamingo-tiny")  # OpenFlamingo's tower output, placement, LayerNorm, fused k/v
    with pytest.raises(ValueError, match="cannot export to transformers' IDEFICS: vision.select is 'default'; IDEFICS has 'full'"):
        model.save_pretrained(tmp_path, format="transformers")
    model = vlmzoo.build("flamingo-tiny", vision={"select": "full", "feature_layers": [-1]})
    with pytest.raises(ValueError, match="cannot export to transformers' IDEFICS: fusion.placement is 'openflamingo'; IDEFICS has 'idefics'"):
        model.save_pretrained(tmp_path, format="transformers")
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("llm", [
    {"kind": "llama"},
    {"kind": "opt", "vocab": 512, "hidden": 256, "layers": 4, "heads": 8, "mlp": 512, "max_positions": 512,
     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
], ids=["llama", "opt"])
def test_any_lm_kind_under_cross_attention_is_its_plain_lm_with_fresh_gates(llm):
    overrides = {} if llm["kind"] == "llama" else {"llm": llm}
    model = vlmzoo.build("flamingo-tiny", **overrides).eval()
    lm_only = vlmzoo.build("flamingo-tiny", **overrides, vision={"kind": "none"}, abstractor={"kind": "identity"},
                           fusion={"kind": "splice", "image_token_id": -1}).eval()
    lm_only.load_state_dict({n: p for n, p in model.state_dict().items() if n.startswith("llm.")})
    size = model.config["vision"]["image_size"]
    input_ids = torch.tensor([[1, 9, 4, 10, 11, 4, 12, 13], [1, 4, 8, 9, 4, 5, 6, 7]])
    pixels = torch.randn(2, 2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids, pixel_values=pixels).logits, lm_only(input_ids=input_ids).logits)
        for p in model.parameters("fusion"):
            p.normal_(0, 0.5)
        opened = model(input_ids=input_ids, pixel_values=pixels).logits
    assert not torch.allclose(opened, lm_only(input_ids=input_ids).logits)
    generated = model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=4, eos_token_id=[])
    assert generated.shape == (2, 12)
