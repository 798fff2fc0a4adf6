"""Fuyu parity: a Hugging Face FuyuForCausalLM folder loads with the same logits and greedy tokens as
transformers, on a left-padded batch of two images of different sizes, in both call forms."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from fuyu_fixtures import IMAGE_TOKEN, PATCH, fuyu_batch, make_hf_fuyu

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_fuyu")
    return folder, make_hf_fuyu(folder)


def max_diff(a, b, mask):
    return (a.float() - b.float())[mask.bool()].abs().max().item()


def reference_logits(reference, input_ids, mask, patches):
    with torch.no_grad():
        return reference(input_ids=input_ids, pixel_values=torch.cat(patches), attention_mask=mask).logits


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_float32_logits_match_transformers_on_two_image_sizes(checkpoint, fused):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    input_ids, mask, _, patches, _ = fuyu_batch()
    assert patches[0].shape[0] != patches[1].shape[0]  # the two images give different patch counts
    expected = reference_logits(reference, input_ids, mask, patches)
    with torch.no_grad():
        actual = model(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask).logits
    assert actual.shape == expected.shape
    assert expected.abs().max() > 0.1
    assert max_diff(actual, expected, mask) <= 1e-4


def test_older_per_sample_form_with_indices_gives_the_same_logits(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, _, patches, indices = fuyu_batch(seed=2)
    expected = reference_logits(reference, input_ids, mask, patches)
    with torch.no_grad():
        as_list = model(input_ids=input_ids, attention_mask=mask, image_patches=[p.unsqueeze(0) for p in patches],
                        image_patches_indices=indices).logits
        width = max(p.shape[0] for p in patches)  # [batch, P, width], each row's patches padded at the end
        padded = torch.stack([torch.cat([p, torch.zeros(width - p.shape[0], p.shape[1])]) for p in patches])
        as_tensor = model(input_ids=input_ids, attention_mask=mask, image_patches=padded,
                          image_patches_indices=indices).logits
        as_pixel_values = model(input_ids=input_ids, attention_mask=mask, pixel_values=torch.cat(patches)).logits
    for actual in (as_list, as_tensor, as_pixel_values):
        assert max_diff(actual, expected, mask) <= 1e-4


def test_images_patchified_in_the_core_match_the_processors_patches(checkpoint):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    _, _, images, patches, _ = fuyu_batch(seed=3)
    with torch.no_grad():
        for image, image_patches in zip(images, patches):
            from_pixels = model.encode_images(image.unsqueeze(0))
            from_patches = model.encode_images(image_patches.unsqueeze(0))
            torch.testing.assert_close(from_pixels, from_patches, rtol=0, atol=0)


def test_greedy_generate_gives_transformers_tokens(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder)
    input_ids, mask, _, patches, _ = fuyu_batch(seed=4)
    expected = reference.generate(input_ids=input_ids, pixel_values=torch.cat(patches), attention_mask=mask,
                                  max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
    actual = model.generate(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask,
                            max_new_tokens=16, eos_token_id=[])
    assert actual.shape == (2, input_ids.shape[1] + 16)
    assert torch.equal(actual, expected)


def test_export_loads_in_transformers_with_the_same_logits(checkpoint, tmp_path):
    folder, _ = checkpoint
    model = vlmzoo.from_pretrained(folder)
    model.save_pretrained(tmp_path, format="transformers")
    exported = transformers.FuyuForCausalLM.from_pretrained(tmp_path).eval()
    input_ids, mask, _, patches, _ = fuyu_batch(seed=5)
    with torch.no_grad():
        ours = model(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask).logits
    assert max_diff(reference_logits(exported, input_ids, mask, patches), ours, mask) <= 1e-4
    assert vlmzoo.from_pretrained(tmp_path).config == model.config


def test_checkpoint_without_qk_norm_and_with_tied_embeddings_matches(tmp_path):
    reference = make_hf_fuyu(tmp_path, seed=6, qk_norm=False, tie=True)
    model = vlmzoo.from_pretrained(tmp_path)
    assert not model.config["llm"]["qk_norm"] and model.config["llm"]["tie_embeddings"]
    input_ids, mask, _, patches, _ = fuyu_batch(seed=7)
    with torch.no_grad():
        actual = model(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask).logits
    assert max_diff(actual, reference_logits(reference, input_ids, mask, patches), mask) <= 1e-4


def test_published_flat_config_reads_as_the_full_preset():
    # adept/fuyu-8b's config.json keeps the text fields flat (transformers 4.35); its values:
    published = {"architectures": ["FuyuForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "relu2",
                 "hidden_size": 4096, "image_size": 300, "intermediate_size": 16384, "layer_norm_eps": 1e-05,
                 "max_position_embeddings": 16384, "model_type": "fuyu", "num_attention_heads": 64,
                 "num_channels": 3, "num_hidden_layers": 36, "partial_rotary_factor": 0.5, "patch_size": 30,
                 "qk_layernorm": True, "rope_theta": 25000.0, "tie_word_embeddings": False, "vocab_size": 262144}
    from vlmzoo.families.fuyu import fuyu_config

    converted = vlmzoo.resolve_config(fuyu_config(published))
    preset = vlmzoo.resolve_config("fuyu-8b")
    for slot in ("vision", "abstractor", "fusion", "llm"):
        assert converted[slot] == preset[slot], slot


def test_full_preset_parameter_count_equals_transformers_and_the_published_count():
    # Source: adept/fuyu-8b (config.json above; the model card gives 9.41B). FuyuConfig's defaults are that
    # file's shapes; FuyuForCausalLM built on the meta device counts 9,408,238,592.
    with torch.device("meta"):
        reference = transformers.FuyuForCausalLM(transformers.FuyuConfig())
    published = sum(p.numel() for p in reference.parameters())
    assert published == 9_408_238_592
    assert vlmzoo.parameter_counts("fuyu-8b")["total"] == published


def test_info_reports_visual_tokens_per_image_size():
    # Tokens depend on the image: ceil(h / 30) * ceil(w / 30) patches (newline tokens are text).
    model = vlmzoo.Model("fuyu-8b", device="meta", initialize=False)
    assert model.visual_tokens_per_image == 100  # the nominal 300 x 300
    assert model._module.visual_tokens_for_image(1080, 1920) == 36 * 64
    assert model._module.visual_tokens_for_image(31, 61) == 2 * 3
    info = vlmzoo.info("fuyu-8b")
    assert info["visual_tokens_by_image_size"]["1080x1920"] == 2304
    assert info["visual_tokens_by_image_size"]["300x300"] == 100


def test_bfloat16_model_takes_float32_patches_and_stays_near_float32(checkpoint):
    folder, reference = checkpoint
    model = vlmzoo.from_pretrained(folder, dtype=torch.bfloat16)
    input_ids, mask, _, patches, _ = fuyu_batch(seed=9)
    expected = reference_logits(reference, input_ids, mask, patches)
    with torch.no_grad():
        actual = model(input_ids=input_ids, image_patches=torch.cat(patches), attention_mask=mask).logits
    assert actual.dtype == torch.bfloat16
    assert max_diff(actual, expected, mask) <= 0.05 * expected.abs().max().item()
