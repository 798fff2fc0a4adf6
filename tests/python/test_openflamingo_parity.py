"""OpenFlamingo parity: open-flamingo 2.0.1's own PerceiverResampler and FlamingoLMMixin (its helpers and
flamingo_lm modules, loaded from the installed package without its open_clip factory) around a transformers
Llama, with the same weights as a vlmzoo flamingo-tiny, give the same latents and logits."""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import vlmzoo
from vlmzoo.families.flamingo.openflamingo import convert_openflamingo

pytest.importorskip("einops")
pytest.importorskip("einops_exts")
transformers = pytest.importorskip("transformers")

IMAGE_TOKEN = 4
# flamingo-tiny with OpenFlamingo's block shape (8 heads x 64, ff_mult 4 over the LM width 256).
CONFIG = dict(fusion={"heads": 8, "head_dim": 64, "mlp": 1024})


def open_flamingo_src():
    """open_flamingo/src as a package of its own: its __init__ imports open_clip, which is not installed."""
    spec = importlib.util.find_spec("open_flamingo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open-flamingo is not installed")
    src = Path(list(spec.submodule_search_locations)[0]) / "src"
    if "_open_flamingo_src" not in sys.modules:
        package = types.ModuleType("_open_flamingo_src")
        package.__path__ = [str(src)]
        sys.modules["_open_flamingo_src"] = package
    return (importlib.import_module("_open_flamingo_src.helpers"), importlib.import_module("_open_flamingo_src.flamingo_lm"),
            importlib.import_module("_open_flamingo_src.utils"))


def hf_llama_from(model: vlmzoo.Model):
    """A transformers LlamaForCausalLM holding the vlmzoo model's LM weights."""
    from vlmzoo.families.common.llama import llama_text_config
    from vlmzoo.families.llava.export import llava_hf_state_dict

    config = transformers.LlamaConfig(**{k: v for k, v in llama_text_config(model.config["llm"]).items() if k != "model_type"})
    llama = transformers.LlamaForCausalLM(config).eval()
    llm_state = {k: v for k, v in model.state_dict().items() if k.startswith("llm.")}
    renamed = {k.removeprefix("language_model."): v for k, v in llava_hf_state_dict(llm_state, model.config).items()
               if k.startswith("language_model.")}
    missing, unexpected = llama.load_state_dict(renamed, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return llama


@pytest.fixture(scope="module")
def pair():
    helpers, flamingo_lm, utils = open_flamingo_src()
    torch.manual_seed(0)
    model = vlmzoo.build("flamingo-tiny", **CONFIG).eval()
    abstractor, llm = model.config["abstractor"], model.config["llm"]
    width = model.config["vision"]["hidden"]
    perceiver = helpers.PerceiverResampler(dim=width, depth=abstractor["layers"], dim_head=abstractor["head_dim"],
                                           heads=abstractor["heads"], num_latents=abstractor["latents"]).eval()
    lang = hf_llama_from(model)
    utils.extend_instance(lang, flamingo_lm.FlamingoLMMixin)
    lang.set_decoder_layers_attr_name("model.layers")
    lang.init_flamingo(media_token_id=IMAGE_TOKEN, lang_hidden_size=llm["hidden"], vis_hidden_size=width,
                       cross_attn_every_n_layers=model.config["fusion"]["every"], gradient_checkpointing=False)
    with torch.no_grad():  # open the gates and move the norms off their identity
        for name, p in [*perceiver.named_parameters(), *lang.gated_cross_attn_layers.named_parameters()]:
            if "gate" in name or "norm" in name or re.search(r"(^|\.)(0|ff\.0)\.(weight|bias)$", name):
                p.add_(torch.randn_like(p) * 0.5)
    state = {f"perceiver.{k}": v for k, v in perceiver.state_dict().items()}
    state.update({f"lang_encoder.gated_cross_attn_layers.{k}": v
                  for k, v in lang.gated_cross_attn_layers.state_dict().items()})
    mapped, others = convert_openflamingo(state, model.config)
    assert others == []
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(("abstractor.", "fusion."))], (missing, unexpected)
    features = vlmzoo.build("flamingo-tiny", **CONFIG, abstractor={"kind": "identity"}).eval()
    features.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("vision.")}, strict=False)
    return model, features, perceiver, lang


def batch(seed: int):
    """Two rows, no padding: text, image, text, image, text; pixel_values [2, 2, C, H, W]."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(5, 500, (n,), generator=g).tolist()  # noqa: E731
    rows = [[1] + text(2) + [IMAGE_TOKEN] + text(4) + [IMAGE_TOKEN] + text(3),
            [1] + text(3) + [IMAGE_TOKEN] + text(6) + [IMAGE_TOKEN] + text(0)]
    return torch.tensor(rows), torch.randn(2, 2, 3, 64, 64, generator=g)


def test_perceiver_latents_match_open_flamingo(pair):
    model, features, perceiver, _ = pair
    _, pixels = batch(1)
    with torch.no_grad():
        media = features.encode_images(pixels.flatten(0, 1))  # [4, P, W]: the tower's patch tokens
        expected = perceiver(media.view(2, 2, 1, *media.shape[1:]))  # [b, T, latents, W]
        actual = model.encode_images(pixels.flatten(0, 1)).view(expected.shape)
    assert (actual - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference-kernels"])
def test_logits_match_open_flamingo_around_the_same_llama(pair, fused):
    model, features, perceiver, lang = pair
    model.fused = fused
    input_ids, pixels = batch(2)
    with torch.no_grad():
        media = features.encode_images(pixels.flatten(0, 1))
        latents = perceiver(media.view(2, 2, 1, *media.shape[1:]))
        for layer in lang._get_decoder_layers():
            layer.condition_vis_x(latents)
        expected = lang(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        lang.clear_conditioned_layers()
        actual = model(input_ids=input_ids, pixel_values=pixels).logits
    model.fused = True
    assert expected.abs().max() > 0.1
    assert (actual - expected).abs().max().item() <= 1e-4


def test_greedy_generate_gives_open_flamingo_tokens(pair):
    model, features, perceiver, lang = pair
    input_ids, pixels = batch(3)
    with torch.no_grad():
        media = features.encode_images(pixels.flatten(0, 1))
        latents = perceiver(media.view(2, 2, 1, *media.shape[1:]))
    # Greedy decoding of OpenFlamingo's forward (the whole sequence each step: the installed transformers'
    # generate no longer passes the attention_mask FlamingoLMMixin.forward requires).
    for layer in lang._get_decoder_layers():
        layer.condition_vis_x(latents)
    expected = input_ids
    with torch.no_grad():
        for _ in range(16):
            logits = lang(input_ids=expected, attention_mask=torch.ones_like(expected)).logits
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], 1)
    lang.clear_conditioned_layers()
    actual = model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=16, eos_token_id=[])
    assert torch.equal(actual, expected)


def test_vit_proj_holds_open_clips_visual_proj_and_leaves_the_features_alone(pair):
    model, _, _, _ = pair
    width = model.config["vision"]["hidden"]
    held = vlmzoo.build("flamingo-tiny", **CONFIG, vision={"proj": 32}).eval()
    assert dict(held.named_parameters())["vision.proj"].shape == (width, 32)
    assert held.num_parameters("vision") == model.num_parameters("vision") + width * 32
    missing, unexpected = held.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["vision.proj"] and not unexpected
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(held.encode_images(pixels), model.encode_images(pixels))
    with pytest.raises(ValueError, match=r"vision\.proj: is held only for a tower read for its tokens; with "
                                         r"vision\.pool \"class\" the projection is the head's"):
        vlmzoo.resolve_config("clip-tiny", vision={"proj": 8})


def test_openflamingo_9b_preset_counts_what_open_flamingo_builds():
    """OpenFlamingo-9B v1 (openflamingo/OpenFlamingo-9B; "9B" on its model card): open_flamingo's Flamingo built
    as factory.create_model_and_transforms("ViT-L-14", "openai", LLaMA-7B, cross_attn_every_n_layers=4) builds
    it, on the meta device. The factory's open_clip import is avoided (open_clip is not installed), so the vision
    module is transformers' CLIPVisionModel of open_clip ViT-L/14's exact shape (conv1 without bias, class and
    positional embeddings, ln_pre, 24 blocks, ln_post: 303,179,776) plus open_clip's `visual.proj` [1024, 768]
    (vlmzoo's vision.proj). The tokenizer gains <|endofchunk|> 32000, <image> 32001 and <PAD> 32002 (LLaMA's has
    no pad token), and the factory resizes the untied embeddings and head to 32003 rows. PerceiverResampler(dim
    1024) with its defaults (depth 6, 8 x 64 heads, 64 latents, ff_mult 4; Flamingo sets no max_num_media or
    max_num_frames, so no media/frame embeddings); a GatedCrossAttentionBlock (8 x 64, ff_mult 4, to_kv from
    1024) before LM layers 3, 7, ..., 31. The exact count is 8,221,241,360.
    The features are Flamingo's vision_encoder(x)[1]: open_clip's tokens without the class token, 256 x 1024,
    which the preset reads as feature_layers [-1], select "default". open_clip 2.16.0 (the least open-flamingo
    2.0.1 accepts, current when OpenFlamingo-9B was trained) leaves them without ln_post; open_clip 2.24.0
    applies ln_post to all tokens before pooling (final_ln_after_pool False): vision.post_norm_tokens true
    (off in this preset; tests/python/test_vit_post_norm_tokens.py).
    <|endofchunk|> (32000) is the preset's eos: Flamingo.generate stops there by default."""
    _, flamingo_lm, utils = open_flamingo_src()
    flamingo = importlib.import_module("_open_flamingo_src.flamingo")

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, hidden_act="quick_gelu"))
            self.proj = torch.nn.Parameter(torch.empty(1024, 768))

    class OpenClip(torch.nn.Module):  # Flamingo keeps only `.visual` of the open_clip model it is given
        def __init__(self):
            super().__init__()
            self.visual = Visual()

    with torch.device("meta"):
        lang = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            rms_norm_eps=1e-6, max_position_embeddings=2048))
        utils.extend_instance(lang, flamingo_lm.FlamingoLMMixin)
        lang.set_decoder_layers_attr_name("model.layers")
        lang.resize_token_embeddings(32003, mean_resizing=False)
        reference = flamingo.Flamingo(OpenClip(), lang, eoc_token_id=32000, media_token_id=32001, vis_dim=1024,
                                      cross_attn_every_n_layers=4)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    blocks = reference.lang_encoder.gated_cross_attn_layers
    assert sum(block is not None for block in blocks) == 8
    expected = {"vision": count(reference.vision_encoder), "abstractor": count(reference.perceiver),
                "fusion": count(blocks), "llm": count(reference.lang_encoder) - count(blocks)}
    expected["total"] = count(reference)
    assert vlmzoo.info("openflamingo-9b")["parameters"] == expected
    assert expected["total"] == 8_221_241_360 and expected["vision"] == 303_179_776 + 1024 * 768
