"""One suite for every registered kind (transformers' ModelTesterMixin idea): each kind, placed in a
tiny model, builds, gives outputs of the right shape, passes gradients to every parameter it uses,
runs the same fused and unfused, round-trips its config, and `info` counts what the build holds.
A kind registered in the core without an entry here fails the suite."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from dual_kind_cases import DUAL_KIND_CASES
from multiway_kind_cases import MULTIWAY_KIND_CASES

TINY = "llava-1.5-tiny"
# Per slot: kind -> overrides on the tiny LLaVA that put that kind in the slot.
KIND_OVERRIDES: dict[str, dict[str, dict]] = {
    "vision": {
        "vit": {},
        "none": {"vision": {"kind": "none"}, "abstractor": {"kind": "identity"}},
        "eva_vit": {"vision": {"kind": "eva_vit", "image_size": 64, "patch_size": 8, "hidden": 128, "layers": 2,
                               "heads": 4, "mlp": 256}},
        # 60 is no multiple of 8: the last row and column of patches are padded (8 x 8 = 64 tokens).
        "patch_linear": {"vision": {"kind": "patch_linear", "image_size": 60, "patch_size": 8},
                         "abstractor": {"kind": "identity"}},
    },
    "abstractor": {
        "mlp": {},
        "linear": {"abstractor": {"kind": "linear"}},
        "pool": {"abstractor": {"kind": "pool", "stride": 2}},
        "identity": {"vision": {"hidden": 256, "heads": 4}, "abstractor": {"kind": "identity"}},
        "qformer": {"abstractor": {"kind": "qformer", "queries": 8, "hidden": 64, "layers": 2, "heads": 4, "mlp": 128,
                                   "vocab": 64, "max_positions": 16}},
        "qformer-instruction": {"abstractor": {"kind": "qformer", "queries": 8, "hidden": 64, "layers": 2, "heads": 4,
                                               "mlp": 128, "vocab": 64, "max_positions": 16, "instruction": True}},
        # LLaVA with a Perceiver Resampler: latents projected into the LM width for splice.
        "perceiver": {"abstractor": {"kind": "perceiver", "latents": 4, "layers": 2, "heads": 2, "head_dim": 16,
                                     "qk_norm": True, "project": True}},
    },
    "fusion": {
        "splice": {},
        # Gated cross-attention before layers 0 and 2 (IDEFICS's rule); the image's run of placeholders
        # counts as one image.
        "cross_attention": {"fusion": {"kind": "cross_attention", "image_token_id": 4, "every": 2, "heads": 4,
                                       "mlp": 128, "qk_norm": True, "gate": "vector"}},
        "cross_attention-openflamingo": {"fusion": {"kind": "cross_attention", "image_token_id": 4, "every": 2,
                                                    "placement": "openflamingo", "heads": 4, "head_dim": 16,
                                                    "kv": "fused", "norm": "layer", "mlp_type": "plain", "mlp": 128,
                                                    "act": "gelu"}},
    },
    "llm": {
        "llama": {},
        "opt": {"llm": {"kind": "opt", "vocab": 512, "hidden": 128, "layers": 2, "heads": 4, "mlp": 256,
                        "max_positions": 512, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}},
        "persimmon": {"llm": {"kind": "persimmon", "vocab": 512, "hidden": 128, "layers": 2, "heads": 4, "mlp": 256,
                              "max_positions": 512, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}},
    },
    "head": {
        "lm": {},
    },
}
CASES = [(slot, kind) for slot, kinds in KIND_OVERRIDES.items() for kind in kinds]


def batch_for(model: vlmzoo.Model, batch: int = 2, text: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    vocab = cfg["llm"]["vocab"]
    tokens = model.visual_tokens_per_image
    image_id = model.image_token_id
    words = torch.randint(5, vocab, (batch, text), generator=g)
    words[words == image_id] = 5
    parts = [torch.ones(batch, 1, dtype=torch.long)]
    out: dict[str, torch.Tensor] = {}
    if tokens:
        parts.append(torch.full((batch, tokens), image_id))
        size = cfg["vision"]["image_size"]
        out["pixel_values"] = torch.randn(batch, cfg["vision"].get("channels", 3), size, size, generator=g)
    parts.append(words)
    out["input_ids"] = torch.cat(parts, 1)
    if model._module.reads_text() and tokens:
        qformer_vocab = cfg["abstractor"]["vocab"]
        out["qformer_input_ids"] = torch.randint(1, qformer_vocab, (batch, 4), generator=g)
        out["qformer_attention_mask"] = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])[:batch]
    return out


@pytest.mark.parametrize("slot", list(KIND_OVERRIDES))
def test_every_registered_kind_has_a_tiny_case_here(slot):
    # dual and multiway encoders: their own suites
    cases = [*KIND_OVERRIDES[slot], *DUAL_KIND_CASES.get(slot, {}), *MULTIWAY_KIND_CASES.get(slot, {})]
    assert set(vlmzoo.kinds(slot)) == {case.split("-", 1)[0] for case in cases}, (
        f"kinds registered for {slot}: {vlmzoo.kinds(slot)}; add the new ones to KIND_OVERRIDES "
        "(or, for dual-encoder kinds, to dual_kind_cases.DUAL_KIND_CASES; multiway-encoder kinds: "
        "multiway_kind_cases.MULTIWAY_KIND_CASES)")


@pytest.mark.parametrize("slot,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kind_builds_runs_and_trains(slot, kind):
    torch.manual_seed(0)
    model = vlmzoo.build(TINY, **KIND_OVERRIDES[slot][kind])
    assert model.config[slot]["kind"] == kind.split("-", 1)[0]
    inputs = batch_for(model)
    out = model(**inputs, labels=inputs["input_ids"])
    if "qformer_input_ids" in inputs:  # the instruction changes what the queries read
        other = dict(inputs, qformer_input_ids=inputs["qformer_input_ids"].flip(1))
        assert not torch.allclose(model(**other).logits, out.logits)
    assert out.logits.shape == (*inputs["input_ids"].shape, model.config["llm"]["vocab"])
    assert torch.isfinite(out.logits).all()
    out.loss.backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None}
    # Only the vision layers past the deepest feature layer and the unused post-norm may stay idle.
    assert all(n.startswith(("vision.post_norm.", "vision.layers.2.")) for n in unused), sorted(unused)


@pytest.mark.parametrize("slot,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kind_runs_the_same_fused_and_unfused(slot, kind):
    model = vlmzoo.build(TINY, **KIND_OVERRIDES[slot][kind]).eval()
    inputs = batch_for(model, seed=1)
    with torch.no_grad():
        fused = model(**inputs).logits
        model.fused = False
        reference = model(**inputs).logits
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("slot,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_kind_config_round_trips_and_info_counts_the_build(slot, kind):
    model = vlmzoo.build(TINY, **KIND_OVERRIDES[slot][kind])
    resolved = model.config
    assert vlmzoo.resolve_config(resolved) == resolved
    counts = vlmzoo.parameter_counts(resolved)
    for name in {n.split(".", 1)[0] for n, _ in model.named_parameters()}:
        assert counts[name] == model.num_parameters(name), name
    assert counts["total"] == model.num_parameters()
    assert vlmzoo.visual_tokens_per_image(resolved) == model.visual_tokens_per_image


@pytest.mark.parametrize("slot", list(KIND_OVERRIDES))
def test_an_unknown_kind_names_the_slot_and_lists_the_registered_kinds(slot):
    with pytest.raises(ValueError) as error:
        vlmzoo.build(TINY, **{slot: {"kind": "no-such-kind"}})
    message = str(error.value)
    assert message.startswith(f'{slot}.kind: "no-such-kind" is not one of the registered {slot} kinds')
    for kind in vlmzoo.kinds(slot):
        assert f'"{kind}"' in message
