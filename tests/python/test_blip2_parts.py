"""BLIP-2 / InstructBLIP vision (`eva_vit`) and Q-Former (`qformer`) against transformers' modules, on
tiny random models saved by save_pretrained (5.x key layout) and renamed to the 4.x layout."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

import vlmzoo
from vlmzoo.families.blip2.parts import blip2_parts_state_dict, blip2_vision_config, qformer_config

transformers = pytest.importorskip("transformers")

QUERIES = 6
QFORMER_VOCAB = 99
VISION = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, image_size=30,
              patch_size=6)
QFORMER = dict(hidden_size=32, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
               vocab_size=QFORMER_VOCAB, max_position_embeddings=40, cross_attention_frequency=2)


def tiny_llama(hidden: int) -> dict:
    return {"kind": "llama", "vocab": 64, "hidden": hidden, "layers": 1, "heads": 4, "kv_heads": 4, "mlp": 48,
            "max_positions": 128, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def make_hf(instruct: bool, folder):
    """A tiny random Blip2ForConditionalGeneration / InstructBlipForConditionalGeneration, every parameter
    drawn at random (norms near 1, the key third of the fused qkv bias too), saved to `folder`."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, InstructBlipConfig,
                              InstructBlipForConditionalGeneration, LlamaConfig)

    torch.manual_seed(7 if instruct else 5)
    text = LlamaConfig(vocab_size=64, hidden_size=40, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
    config_class, model_class = ((InstructBlipConfig, InstructBlipForConditionalGeneration) if instruct
                                 else (Blip2Config, Blip2ForConditionalGeneration))
    config = config_class(vision_config=VISION, qformer_config=QFORMER, text_config=text.to_dict(),
                          num_query_tokens=QUERIES)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "norm" in name.lower() and name.endswith("weight") else 0.0))
    model.save_pretrained(folder)
    return model


def four_x_layout(tensors: dict) -> dict:
    """transformers 4.x names: the ViT attention's q and v biases as their own tensors."""
    out = {}
    for name, t in tensors.items():
        if name.endswith("self_attn.qkv.bias"):
            d = t.shape[0] // 3
            out[name.replace("qkv.bias", "q_bias")] = t[:d].clone()
            out[name.replace("qkv.bias", "v_bias")] = t[2 * d:].clone()
        else:
            out[name] = t
    return out


def vlmzoo_model(hf_config: dict, instruct: bool, tensors: dict, *, abstractor: dict | None = None, fused=True):
    """Our model with the checkpoint's vision and Q-Former (its LM is a tiny random llama); fused=False
    builds it on the plain ATen references."""
    abstractor = abstractor or qformer_config(hf_config, instruct)
    width = hf_config["text_config"]["hidden_size"] if abstractor["kind"] == "qformer" else VISION["hidden_size"]
    config = {"family": "blip2", "vision": blip2_vision_config(hf_config), "abstractor": abstractor,
              "fusion": {"kind": "splice", "image_token_id": 3}, "llm": tiny_llama(width), "fused": fused}
    model = vlmzoo.Model(config, initialize=True)
    mapped, unknown, rest = blip2_parts_state_dict(tensors)
    assert unknown == []
    assert all(name.startswith("language_model.") for name in rest)
    ours = {n for n, _ in model.named_parameters() if n.split(".")[0] in ("vision", "abstractor")}
    if abstractor["kind"] != "qformer":
        mapped = {k: v for k, v in mapped.items() if k.startswith("vision.")}
    assert set(mapped) == ours  # every parameter of both slots comes from the checkpoint, nothing is left over
    model.load_state_dict(mapped, strict=False)
    return model.eval()


def saved(instruct: bool, tmp_path_factory):
    """(instruct, transformers model, its config dict, the tensors its save_pretrained wrote)."""
    folder = tmp_path_factory.mktemp("hf_instructblip" if instruct else "hf_blip2")
    reference = make_hf(instruct, folder)
    return instruct, reference, reference.config.to_dict(), load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    return saved(False, tmp_path_factory)


@pytest.fixture(scope="module")
def instructblip(tmp_path_factory):
    return saved(True, tmp_path_factory)


@pytest.fixture(params=["blip2", "instructblip"])
def checkpoint(request):
    return request.getfixturevalue(request.param)


def pixels(n=3, seed=1):
    return torch.randn(n, 3, VISION["image_size"], VISION["image_size"], generator=torch.Generator().manual_seed(seed))


def instructions(seed=2):
    """Two instructions of different lengths per image row, the shorter one right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, QFORMER_VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("fused", [True, False])
def test_eva_vit_gives_blip2_vision_model_last_hidden_state(checkpoint, fused):
    instruct, reference, hf_config, tensors = checkpoint
    model = vlmzoo_model(hf_config, instruct, tensors, abstractor={"kind": "identity"}, fused=fused)
    x = pixels()
    with torch.no_grad():
        expected = reference.vision_model(pixel_values=x).last_hidden_state
        actual = model.encode_images(x)
    assert actual.shape == expected.shape == (3, (30 // 6) ** 2 + 1, VISION["hidden_size"])
    assert (actual - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("layout", ["5.x", "4.x"])
@pytest.mark.parametrize("fused", [True, False])
def test_qformer_gives_transformers_image_features(checkpoint, layout, fused):
    instruct, reference, hf_config, tensors = checkpoint
    model = vlmzoo_model(hf_config, instruct, four_x_layout(tensors) if layout == "4.x" else tensors, fused=fused)
    x = pixels()
    text = dict(zip(("qformer_input_ids", "qformer_attention_mask"), instructions())) if instruct else {}
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=x, **text).pooler_output
        actual = model.encode_images(x, **text)
    assert actual.shape == expected.shape == (3, QUERIES, 40)
    assert expected.abs().max() > 0.1  # a real signal
    assert (actual - expected).abs().max().item() <= 1e-4


def test_instruction_padding_is_masked_out(instructblip):
    instruct, reference, hf_config, tensors = instructblip
    model = vlmzoo_model(hf_config, instruct, tensors)
    ids, mask = instructions()
    x = pixels()
    with torch.no_grad():
        padded = model.encode_images(x, ids, mask)
        other_pad = model.encode_images(x, ids.masked_fill(mask == 0, 5), mask)
        short = model.encode_images(x[1:2], ids[1:2, :4], mask[1:2, :4])
    assert torch.allclose(padded, other_pad, atol=1e-6)
    assert torch.allclose(padded[1:2], short, atol=1e-5)


def test_vision_and_abstractor_flops_count_every_matmul_of_the_reference(blip2):
    instruct, reference, hf_config, tensors = blip2  # (flops() counts query rows; text rows add their share)
    model = vlmzoo_model(hf_config, instruct, tensors)
    flops = model._module.forward_flops(0, 2)
    x = pixels(2)
    reference = copy.deepcopy(reference)
    reference.set_attn_implementation("eager")  # attention as matmuls, which the counter sees (CPU SDPA it does not)
    with FlopCounterMode(display=False) as vision_counter:  # (its module tracker needs grad mode)
        features = reference.vision_model(pixel_values=x).last_hidden_state.detach()
    with FlopCounterMode(display=False) as qformer_counter:
        reference.language_projection(reference.qformer(
            query_embeds=reference.query_tokens.expand(2, -1, -1), encoder_hidden_states=features).last_hidden_state)
    assert flops["vision"] == vision_counter.get_total_flops()
    assert flops["abstractor"] == qformer_counter.get_total_flops()


@pytest.mark.parametrize("instruct", [False, True], ids=["blip2", "instructblip"])
def test_full_size_slots_count_transformers_parameters(instruct):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, InstructBlipConfig
    from transformers import InstructBlipForConditionalGeneration

    config_class, model_class = ((InstructBlipConfig, InstructBlipForConditionalGeneration) if instruct
                                 else (Blip2Config, Blip2ForConditionalGeneration))
    with torch.device("meta"):
        reference = model_class(config_class())
    hf = reference.config.to_dict()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    expected_abstractor = count(reference.qformer) + reference.query_tokens.numel() + count(reference.language_projection)
    config = {"family": "blip2", "vision": blip2_vision_config(hf), "abstractor": qformer_config(hf, instruct),
              "fusion": {"kind": "splice", "image_token_id": 3}, "llm": tiny_llama(hf["text_config"]["hidden_size"])}
    model = vlmzoo.Model(config, device="meta")
    ours = lambda slot: sum(p.numel() for _, p in model.named_parameters(slot=slot))  # noqa: E731
    assert ours("abstractor") == expected_abstractor
    # transformers 5.x holds the ViT's fused qkv bias as one parameter whose key third is the constant
    # zero; we hold only the q and v biases (as 4.x and the original checkpoints do).
    layers, hidden = hf["vision_config"]["num_hidden_layers"], hf["vision_config"]["hidden_size"]
    assert ours("vision") == count(reference.vision_model) - layers * hidden
    assert model.visual_tokens_per_image == 32


def test_blip2_qformer_refuses_instruction_text(blip2):
    instruct, _, hf_config, tensors = blip2
    model = vlmzoo_model(hf_config, instruct, tensors)
    ids, mask = instructions()
    with pytest.raises(ValueError, match="reads no text"):
        model.encode_images(pixels(), ids, mask)


def test_instruction_errors_name_the_input(instructblip):
    instruct, _, hf_config, tensors = instructblip
    model = vlmzoo_model(hf_config, instruct, tensors)
    ids, mask = instructions()
    with pytest.raises(ValueError, match=r"qformer_input_ids: token ids must lie in \[0, 99\)"):
        model.encode_images(pixels(), ids + QFORMER_VOCAB, mask)
    long_ids = torch.ones(3, 41, dtype=torch.long)
    with pytest.raises(ValueError, match="qformer_input_ids: 41 tokens, more than abstractor.max_positions 40"):
        model.encode_images(pixels(), long_ids)


def test_qformer_config_errors_name_the_field():
    base = {"family": "blip2", "vision": {"kind": "eva_vit", "image_size": 12, "patch_size": 6, "hidden": 16,
                                          "layers": 1, "heads": 2, "mlp": 32},
            "fusion": {"kind": "splice", "image_token_id": 3}, "llm": tiny_llama(16)}
    small = {"kind": "qformer", "queries": 4, "hidden": 16, "layers": 2, "heads": 2, "mlp": 32}
    with pytest.raises(ValueError, match=r"abstractor\.text_ffn: must be true when abstractor\.instruction is true"):
        vlmzoo.Model({**base, "abstractor": {**small, "instruction": True, "text_ffn": False}}, device="meta")
    with pytest.raises(ValueError, match=r"abstractor\.heads: 3 does not divide abstractor\.hidden 16"):
        vlmzoo.Model({**base, "abstractor": {**small, "heads": 3}}, device="meta")
    with pytest.raises(ValueError, match=r"vision\.patch_size: 5 does not divide vision\.image_size 12"):
        vlmzoo.Model({**base, "vision": {**base["vision"], "patch_size": 5}, "abstractor": small}, device="meta")
    model = vlmzoo.Model({**base, "abstractor": small}, device="meta")
    assert model.config["abstractor"]["text_ffn"] is False
    assert vlmzoo.Model({**base, "abstractor": {**small, "instruction": True}},
                        device="meta").config["abstractor"]["text_ffn"] is True


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_match_transformers(instructblip, fused):
    """Backward through the ViT and the Q-Former (key padding, cross-attention, both FFNs) gives
    transformers' parameter gradients."""
    instruct, reference, hf_config, tensors = instructblip
    model = vlmzoo_model(hf_config, instruct, tensors, fused=fused)
    x = pixels()
    ids, mask = instructions()
    weights = torch.randn(3, QUERIES, 40, generator=torch.Generator().manual_seed(4))
    reference.zero_grad()
    (reference.get_image_features(pixel_values=x, qformer_input_ids=ids, qformer_attention_mask=mask).pooler_output
     * weights).sum().backward()
    (model.encode_images(x, ids, mask) * weights).sum().backward()
    expected, _, _ = blip2_parts_state_dict({n: p.grad for n, p in reference.named_parameters() if p.grad is not None})
    actual = {n: p.grad for n, p in model.named_parameters() if n.split(".")[0] in ("vision", "abstractor")}
    assert set(actual) == set(expected)
    # Within 1e-4 of each gradient's scale; the keys' biases have a true gradient of zero (softmax cancels
    # them), so their float noise gets an absolute 1e-5.
    bad = [n for n in actual if (actual[n] - expected[n]).abs().max() > 1e-5 + 1e-4 * expected[n].abs().max()]
    assert bad == []
    assert expected["abstractor.query_tokens"].abs().max() > 1.0  # a real signal


def test_converter_hands_back_unknown_part_names_and_the_language_model(blip2):
    _, _, _, tensors = blip2
    extra = {"qformer.encoder.layer.0.attention.attention.distance_embedding.weight": torch.zeros(3),
             "vision_model.encoder.layers.0.self_attn.rel_pos_bias": torch.zeros(3)}
    mapped, unknown, rest = blip2_parts_state_dict({**tensors, **extra})
    assert unknown == sorted(extra)
    assert set(rest) == {n for n in tensors if n.startswith("language_model.")}
    prefixed, _, _ = blip2_parts_state_dict({f"model.{n}": t for n, t in tensors.items() if not n.startswith("language_model.")})
    assert set(prefixed) == set(mapped)
