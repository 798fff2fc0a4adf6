"""The round trip for every family transformers has: a random vlmzoo model, saved with
save_pretrained(folder, format="transformers"), loads in transformers' own class (AutoModel... and the
family class) with no missing or unexpected weights and gives vlmzoo's logits within 1e-5."""
from __future__ import annotations

import pytest
import torch

import vlmzoo

transformers = pytest.importorskip("transformers")

# preset, overrides, transformers class, Auto class that must pick it from config.json alone.
DECODERS = {
    "blip2-opt": ("blip2-opt-tiny", {}, "Blip2ForConditionalGeneration", "AutoModelForImageTextToText"),
    "blip2-opt-untied": ("blip2-opt-tiny", {"llm": {"tie_embeddings": False}},
                                   "Blip2ForConditionalGeneration", "AutoModelForImageTextToText"),
    "blip2-llama": ("instructblip-tiny", {"abstractor": {"instruction": False, "text_ffn": False}},
                    "Blip2ForConditionalGeneration", "AutoModelForImageTextToText"),
    "instructblip-llama": ("instructblip-tiny", {}, "InstructBlipForConditionalGeneration",
                           "AutoModelForImageTextToText"),
    "llava": ("llava-1.5-tiny", {}, "LlavaForConditionalGeneration", "AutoModelForImageTextToText"),
}
DUALS = {"clip": ("clip-tiny", "CLIPModel"), "siglip": ("siglip-tiny", "SiglipModel")}


def randomised(preset: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = vlmzoo.build(preset, **overrides)
    with torch.no_grad():  # the constructor leaves norms at 1/0 and biases at 0: move every weight
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def decoder_inputs(model, seed: int = 1) -> dict[str, torch.Tensor]:
    """Two rows as the family's processor lays them out: image tokens, then left-padded text."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    vocab, pad = config["llm"]["vocab"], config["llm"]["pad_token_id"]
    image = torch.full((2, model.visual_tokens_per_image), model.image_token_id, dtype=torch.long)
    text = torch.randint(5, vocab, (2, 7), generator=g)
    text[1, :3] = pad
    mask = torch.ones(2, image.shape[1] + 7, dtype=torch.long)
    mask[1, image.shape[1]:image.shape[1] + 3] = 0
    size = config["vision"]["image_size"]
    inputs = dict(input_ids=torch.cat([image, text], 1), attention_mask=mask,
                  pixel_values=torch.randn(2, 3, size, size, generator=g))
    if config["abstractor"].get("instruction"):
        qformer_ids = torch.randint(5, config["abstractor"]["vocab"], (2, 5), generator=g)
        qformer_mask = torch.ones_like(qformer_ids)
        qformer_mask[1, 3:] = 0
        inputs.update(qformer_input_ids=qformer_ids, qformer_attention_mask=qformer_mask)
    return inputs


def load_checked(class_name: str, folder):
    reference, info = getattr(transformers, class_name).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return reference.eval()


@pytest.mark.parametrize("case", list(DECODERS))
def test_decoder_round_trip_gives_our_logits_in_transformers(case, tmp_path):
    preset, overrides, class_name, auto_name = DECODERS[case]
    model = randomised(preset, **overrides)
    model.save_pretrained(tmp_path, format="transformers")
    reference = load_checked(class_name, tmp_path)
    assert type(load_checked(auto_name, tmp_path)).__name__ == class_name
    inputs = decoder_inputs(model)
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    assert expected.abs().max() > 0.1  # a real signal
    assert (actual - expected)[mask].abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", list(DUALS))
def test_dual_encoder_round_trip_gives_our_logits_in_transformers(case, tmp_path):
    preset, class_name = DUALS[case]
    model = randomised(preset)
    model.save_pretrained(tmp_path, format="transformers")
    reference = load_checked(class_name, tmp_path)
    assert type(load_checked("AutoModel", tmp_path)).__name__ == class_name
    config = model.config
    g = torch.Generator().manual_seed(2)
    eos = config["llm"]["eos_token_id"]
    input_ids = torch.randint(5, config["llm"]["vocab"], (3, 6), generator=g)
    input_ids[:, -1] = eos  # CLIP pools at the end-of-text token
    size = config["vision"]["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=g)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixels)
        actual = model(input_ids=input_ids, pixel_values=pixels)
    assert expected.logits_per_image.abs().max() > 0.1
    for field in ("logits_per_image", "image_embeds", "text_embeds"):
        assert (getattr(actual, field) - getattr(expected, field)).abs().max().item() <= 1e-5, field


def test_what_transformers_cannot_express_is_refused_by_field(tmp_path):
    model = vlmzoo.build("blip2-opt-tiny", llm={"word_embed_dim": 96})
    with pytest.raises(ValueError, match="llm.word_embed_dim"):
        model.save_pretrained(tmp_path, format="transformers")
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("preset", ["llava-1.5-tiny", "clip-tiny"])
def test_vlmzoo_stays_the_default_format(preset, tmp_path):
    model = randomised(preset)
    model.save_pretrained(tmp_path)
    loaded = vlmzoo.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("preset", ["llava-1.5-tiny", "siglip-tiny"])
def test_an_unknown_format_is_refused_with_the_choices(preset, tmp_path):
    model = vlmzoo.build(preset)
    with pytest.raises(ValueError, match=r"'onnx' is not one of 'vlmzoo', 'transformers'"):
        model.save_pretrained(tmp_path, format="onnx")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fused_qkv_bias", [True, False], ids=["transformers-5-qkv-bias", "transformers-4-q-v-bias"])
def test_both_blip2_vit_bias_layouts_read_back_to_the_same_weights(fused_qkv_bias):
    from vlmzoo.families.blip2.export import blip2_hf_state_dict
    from vlmzoo.families.blip2.convert import blip2_state_dict

    model = randomised("instructblip-tiny")
    exported = blip2_hf_state_dict(model.state_dict(), model.config, fused_qkv_bias=fused_qkv_bias)
    assert any(k.endswith("qkv.bias") for k in exported) == fused_qkv_bias
    mapped, unknown = blip2_state_dict(exported, "llama")
    assert not unknown and mapped.keys() == model.state_dict().keys()
    assert all(torch.equal(mapped[k], v) for k, v in model.state_dict().items())
