"""The kind suite for the dual-encoder kinds (vision pooled "class" / "map", llm clip_text /
siglip_text, head contrastive), which the decoder suite (test_slot_kinds.py) cannot hold: each, in a
tiny CLIP or SigLIP, builds, gives outputs of the right shapes, passes gradients to every parameter,
runs the same fused and unfused, round-trips its config, and `info` counts what the build holds."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from dual_kind_cases import DUAL_KIND_CASES
from vlmzoo.models.dual_encoder import DualEncoderModel

CASES = [(slot, kind) for slot, kinds in DUAL_KIND_CASES.items() for kind in kinds]
IDS = [f"{s}-{k}" for s, k in CASES]


def build(slot: str, kind: str) -> DualEncoderModel:
    preset, overrides = DUAL_KIND_CASES[slot][kind]
    return vlmzoo.build(preset, **overrides)


def batch_for(model: DualEncoderModel, texts: int = 3, images: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random texts (the last one padded at the end, each ending in its eos) and random pixels."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    eos, pad = cfg["llm"]["eos_token_id"], cfg["llm"]["pad_token_id"]
    ids = torch.randint(3, cfg["llm"]["vocab"], (texts, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[:, -1] = eos
    ids[-1, 4], ids[-1, 5:], mask[-1, 5:] = eos, pad, 0
    size = cfg["vision"]["image_size"]
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": torch.randn(images, 3, size, size, generator=g)}


@pytest.mark.parametrize("slot,kind", CASES, ids=IDS)
def test_kind_builds_scores_every_pair_and_trains(slot, kind):
    torch.manual_seed(0)
    model = build(slot, kind)
    assert isinstance(model, DualEncoderModel)
    assert model.config[slot]["kind"] == kind.split("-", 1)[0]
    inputs = batch_for(model)
    out = model(**inputs, return_loss=True)
    e = model.embed_dim
    assert out.logits_per_text.shape == (3, 3) and out.logits_per_image.shape == (3, 3)
    assert out.image_embeds.shape == (3, e) and out.text_embeds.shape == (3, e)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    for embeds in (out.image_embeds, out.text_embeds):  # unit norm, as the reference returns them
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    out.loss.backward()
    unused = sorted(n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0)
    assert unused == [], unused


@pytest.mark.parametrize("slot,kind", CASES, ids=IDS)
def test_kind_runs_the_same_fused_and_unfused(slot, kind):
    model = build(slot, kind).eval()
    inputs = batch_for(model, seed=1)
    with torch.no_grad():
        fused = model(**inputs)
        model.fused = False
        reference = model(**inputs)
    for name in ("logits_per_text", "image_embeds", "text_embeds"):
        torch.testing.assert_close(fused[name], reference[name], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("slot,kind", CASES, ids=IDS)
def test_kind_config_round_trips_and_info_counts_the_build(slot, kind):
    model = build(slot, kind)
    resolved = model.config
    assert "abstractor" not in resolved and "fusion" not in resolved
    assert vlmzoo.resolve_config(resolved) == resolved
    counts = vlmzoo.parameter_counts(resolved)
    for name in ("vision", "llm", "head"):
        assert counts[name] == model.num_parameters(name), name
    assert counts["total"] == model.num_parameters()
    assert vlmzoo.visual_tokens_per_image(resolved) == 1


def test_temperature_and_bias_start_at_the_references_constants():
    clip, siglip = vlmzoo.build("clip-tiny"), vlmzoo.build("siglip-tiny")
    assert clip.head.logit_scale.item() == pytest.approx(2.6592)
    assert siglip.head.logit_scale.item() == pytest.approx(2.302585, abs=1e-6)
    assert siglip.head.logit_bias.item() == pytest.approx(-10.0)


def test_losses_are_clips_infonce_and_siglips_pairwise_sigmoid():
    from vlmzoo.models.dual_encoder import sigmoid_contrastive_loss, softmax_contrastive_loss

    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(4)
    expected_softmax = (torch.nn.functional.cross_entropy(logits, targets)
                        + torch.nn.functional.cross_entropy(logits.t(), targets)) / 2
    torch.testing.assert_close(softmax_contrastive_loss(logits), expected_softmax)
    expected_sigmoid = sum(-torch.nn.functional.logsigmoid(logits[i, j] if i == j else -logits[i, j])
                           for i in range(4) for j in range(4)) / 4
    torch.testing.assert_close(sigmoid_contrastive_loss(logits), expected_sigmoid)


@pytest.mark.parametrize("overrides,message", [
    ({"abstractor": {"kind": "mlp"}}, "abstractor: the dual_encoder assembly"),
    ({"llm": {"kind": "llama"}}, 'llm.kind: "llama" is not a text encoder'),
    ({"vision": {"pool": "none"}}, "vision.pool: the dual_encoder assembly needs one pooled vector"),
    ({"vision": {"feature_layers": -2}}, "vision.feature_layers: must be [-1] with vision.pool"),
    ({"head": {"kind": "lm"}}, 'head.kind: "lm" is not an image-text head'),
])
def test_a_config_the_dual_encoder_cannot_build_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        vlmzoo.build("clip-tiny", **overrides)


def test_bad_inputs_are_clear_errors():
    model = vlmzoo.build("clip-tiny")
    inputs = batch_for(model)
    with pytest.raises(ValueError, match="input_ids: token ids must lie in"):
        model(**dict(inputs, input_ids=inputs["input_ids"] + 1000))
    with pytest.raises(ValueError, match="attention_mask: expected the shape of input_ids"):
        model(**dict(inputs, attention_mask=inputs["attention_mask"][:, :3]))
    with pytest.raises(ValueError, match="more than the text encoder's llm.max_positions"):
        model(input_ids=torch.ones(1, 65, dtype=torch.long), pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="pixel_values: expected"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:, :, :32])
    with pytest.raises(ValueError, match="return_loss: pairs text i with image i"):
        model(**dict(inputs, pixel_values=inputs["pixel_values"][:2]), return_loss=True)


def test_model_pickles_and_saves_as_a_dual_encoder(tmp_path):
    import copy

    model = vlmzoo.build("siglip-tiny").eval()
    inputs = batch_for(model)
    twin = copy.deepcopy(model)
    model.save_pretrained(str(tmp_path))
    loaded = vlmzoo.from_pretrained(tmp_path)
    assert isinstance(twin, DualEncoderModel) and isinstance(loaded, DualEncoderModel)
    with torch.no_grad():
        expected = model(**inputs).logits_per_text
        torch.testing.assert_close(twin(**inputs).logits_per_text, expected, atol=0, rtol=0)
        torch.testing.assert_close(loaded(**inputs).logits_per_text, expected, atol=0, rtol=0)
