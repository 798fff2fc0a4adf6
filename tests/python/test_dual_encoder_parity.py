"""CLIP and SigLIP parity: Hugging Face CLIPModel / SiglipModel folders (tiny, random, saved with
save_pretrained) load into vlmzoo's dual encoder and give the same embeddings and logits in float32
(max abs diff <= 1e-4), fused and unfused, on a padded text batch."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from vlmzoo.models.dual_encoder import DualEncoderModel

transformers = pytest.importorskip("transformers")

VOCAB, EOS, PAD = 99, 2, 1
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _perturb_norms_and_save(model, folder):
    # Random init leaves norms at 1/0 and the temperature at a constant; perturb them so the
    # comparison sees every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "logit_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval().save_pretrained(folder)
    return model


def make_hf_clip(folder, eos_token_id=EOS, seed=0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(TOWER, vocab_size=VOCAB, max_position_embeddings=16, eos_token_id=eos_token_id,
                         pad_token_id=PAD, bos_token_id=0),
        vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=24)
    return _perturb_norms_and_save(CLIPModel(config), folder)


def make_hf_siglip(folder, seed=0, image_size=32):
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(TOWER, vocab_size=VOCAB, max_position_embeddings=16, eos_token_id=EOS, pad_token_id=PAD),
        vision_config=dict(TOWER, image_size=image_size, patch_size=8))
    model = SiglipModel(config)
    with torch.no_grad():  # SiglipModel's own init leaves the pooling head's biases at zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return _perturb_norms_and_save(model, folder)


def text_batch(eos: int, seed: int = 1):
    """Three texts of 9 tokens; rows 1 and 2 end early (eos, then padding, mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[0, -1] = eos
    for row, length in ((1, 6), (2, 4)):
        ids[row, length - 1], ids[row, length:], mask[row, length:] = eos, PAD, 0
    return ids, mask


def max_diffs(actual, expected):
    return {name: (getattr(actual, name) - getattr(expected, name)).abs().max().item()
            for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds")}


def compare(folder, reference, eos, fused=True, mask=True, image_size=32):
    model = vlmzoo.from_pretrained(folder)
    assert isinstance(model, DualEncoderModel)
    model.fused = fused
    ids, attention_mask = text_batch(eos)
    pixels = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    kwargs = dict(input_ids=ids, pixel_values=pixels, attention_mask=attention_mask if mask else None)
    with torch.no_grad():
        expected = reference(**kwargs)
        actual = model(**kwargs)
    assert actual.logits_per_text.shape == expected.logits_per_text.shape == (3, 2)
    assert expected.logits_per_text.abs().max() > 0.1  # a real signal
    return max_diffs(actual, expected)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_clip")
    return folder, make_hf_clip(folder)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_siglip")
    return folder, make_hf_siglip(folder)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_clip_matches_transformers_on_a_padded_batch(clip, fused):
    diffs = compare(*clip, eos=EOS, fused=fused)
    print("clip", "fused" if fused else "reference", diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_clip_with_a_new_style_eos_id_pools_at_the_first_eos(tmp_path):
    # eos_token_id != 2: pooled at the first eos, not at argmax(input_ids) (ids above eos occur here).
    reference = make_hf_clip(tmp_path, eos_token_id=5, seed=3)
    diffs = compare(tmp_path, reference, eos=5)
    assert max(diffs.values()) <= 1e-4, diffs


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
def test_siglip_matches_transformers(siglip, fused, mask):
    diffs = compare(*siglip, eos=EOS, fused=fused, mask=mask)
    print("siglip", "fused" if fused else "reference", "mask" if mask else "no mask", diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_siglip_with_a_patch_size_that_does_not_divide_the_image(tmp_path):
    # 36 / 8: the convolution drops the remainder (4 x 4 patches), as SigLIP so400m's 384 / 14.
    reference = make_hf_siglip(tmp_path, seed=5, image_size=36)
    diffs = compare(tmp_path, reference, eos=EOS, image_size=36)
    assert max(diffs.values()) <= 1e-4, diffs


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_loss_matches_transformers(which, clip, siglip):
    folder, reference = clip if which == "clip" else siglip
    model = vlmzoo.from_pretrained(folder)
    ids, mask = text_batch(EOS)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        actual = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
    assert abs(actual.item() - expected.item()) <= 1e-4


def test_unknown_weights_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    make_hf_clip(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["text_model.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match="unexpected weights .*text_model.extra.weight"):
        vlmzoo.from_pretrained(tmp_path)


# Published configs (config.json of openai/clip-vit-large-patch14-336 and google/siglip-so400m-patch14-384
# on the Hugging Face Hub), written out here: nothing is downloaded.
CLIP_L14_336 = dict(
    projection_dim=768, logit_scale_init_value=2.6592,
    text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     max_position_embeddings=77, vocab_size=49408, projection_dim=768, bos_token_id=0,
                     eos_token_id=2, pad_token_id=1),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                       image_size=336, patch_size=14, projection_dim=768))
SIGLIP_SO400M_384 = dict(
    text_config=dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                       image_size=384, patch_size=14))


@pytest.mark.parametrize("preset,published", [
    ("clip-vit-large-patch14-336", ("CLIPConfig", "CLIPModel", CLIP_L14_336)),
    ("siglip-so400m-patch14-384", ("SiglipConfig", "SiglipModel", SIGLIP_SO400M_384)),
])
def test_full_preset_parameter_count_equals_transformers(preset, published):
    config_class, model_class, values = published
    with torch.device("meta"):
        reference = getattr(transformers, model_class)(getattr(transformers, config_class)(**values))
    expected = sum(p.numel() for p in reference.parameters())
    counts = vlmzoo.parameter_counts(preset)
    assert counts["total"] == expected, (counts, expected)
    # The converter reads the same published config into the preset's shapes.
    from vlmzoo.families.clip.convert import clip_config, siglip_config

    converted = (clip_config if model_class == "CLIPModel" else siglip_config)(values)
    assert vlmzoo.parameter_counts(converted)["total"] == expected


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_loss_gradients_match_transformers(which, clip, siglip):
    from vlmzoo.families.clip.convert import dual_state_dict

    folder, reference = clip if which == "clip" else siglip
    model = vlmzoo.from_pretrained(folder)
    ids, mask = text_batch(EOS)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    reference.zero_grad()
    reference(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss.backward()
    model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss.backward()
    expected, unknown = dual_state_dict({n: p.grad for n, p in reference.named_parameters() if p.grad is not None})
    assert not unknown
    own = dict(model.named_parameters())
    assert set(expected) == set(own)
    worst = max((own[n].grad - g.reshape(own[n].shape)).abs().max().item() for n, g in expected.items())
    assert worst <= 1e-4, worst


def _features(output):
    # transformers 5 returns the projections as .pooler_output of a model output; 4.x as a tensor.
    return getattr(output, "pooler_output", output)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_get_features_are_the_unnormalised_projections_as_in_transformers(which, fused, clip, siglip):
    folder, reference = clip if which == "clip" else siglip
    model = vlmzoo.from_pretrained(folder)
    model.fused = fused
    ids, mask = text_batch(EOS)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected_images = _features(reference.get_image_features(pixel_values=pixels))
        expected_texts = _features(reference.get_text_features(input_ids=ids, attention_mask=mask))
        images = model.get_image_features(pixels)
        texts = model.get_text_features(ids, mask)
        unit_images = model.get_image_features(pixels, normalize=True)
        embeds = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    assert not torch.allclose(expected_images.norm(dim=-1), torch.ones(2), atol=1e-3)  # unnormalised there
    assert (images - expected_images).abs().max().item() <= 1e-4
    assert (texts - expected_texts).abs().max().item() <= 1e-4
    # normalize=True gives the unit-norm embeddings the logits compare (the output's image_embeds).
    assert (unit_images - embeds.image_embeds).abs().max().item() <= 1e-5
    assert (unit_images - images / images.norm(dim=-1, keepdim=True)).abs().max().item() <= 1e-5
