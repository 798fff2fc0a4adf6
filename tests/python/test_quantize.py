"""model.quantize("bf16" | "int8"): every linear layer packed once, attention and norms left in float32.

Bounds, as relative Frobenius errors of the outputs against the same model in float32 (tiny presets,
random weights with the transformers-style init):
  bf16  2%: each weight is rounded to 8 significant bits (relative error <= 2^-9 = 0.2%); the errors of
        independent weights average out within a dot product and add up over a few layers. On a CPU
        with AMX, a prefill of more than 32 rows rounds the activations to bf16 as well (the same size
        of error again, on the other operand).
  int8  15%: weights are rounded to 1/127 of their row's largest magnitude and activations to 1/255 of
        their row's range (per-layer error ~1-3%, bench/RESULTS.md); tiny random models have a few
        layers whose errors add, and nearly tied logits near zero inflate the relative error.
On llava-1.5-small, bench/quantized_accuracy.py measured bf16 0.61% (0.75% with the AMX prefill) and int8
3.63% (bench/RESULTS.md).
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

import vlmzoo
from vlmzoo.models.quantize import FORMATS

BOUND = {"bf16": 0.02, "int8": 0.15}
DECODERS = ["llava-1.5-tiny", "blip2-opt-tiny", "instructblip-tiny", "fuyu-tiny", "idefics-tiny", "flamingo-tiny"]
DUAL = ["clip-tiny", "siglip-tiny"]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.double() - reference.double()).norm() / reference.double().norm())


def pair(name: str, format: str):
    """(float model, the same weights quantised to format)."""
    torch.manual_seed(0)
    reference = vlmzoo.build(name).eval()
    quantised = copy.deepcopy(reference).quantize(format)
    return reference, quantised


def decoder_batch(model, batch: int = 2, text: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    tokens = model.visual_tokens_per_image
    words = torch.randint(10, min(cfg["llm"]["vocab"], 200), (batch, text), generator=g)
    image = torch.full((batch, tokens), model.image_token_id)
    size = cfg["vision"]["image_size"]
    out = dict(input_ids=torch.cat([image, words], 1), pixel_values=torch.randn(batch, 3, size, size, generator=g))
    if cfg["abstractor"]["kind"] == "qformer" and cfg["abstractor"].get("reads_text"):
        out["qformer_input_ids"] = torch.randint(10, 100, (batch, 4), generator=g)
    return out


def dual_batch(model, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    size = cfg["vision"]["image_size"]
    ids = torch.randint(3, cfg["llm"]["vocab"], (3, 7), generator=g)
    ids[:, -1] = cfg["llm"]["eos_token_id"]
    return {"input_ids": ids, "pixel_values": torch.randn(3, 3, size, size, generator=g)}


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("name", DECODERS)
def test_quantised_decoder_logits_stay_close_to_float32(name, format):
    reference, quantised = pair(name, format)
    batch = decoder_batch(reference)
    with torch.no_grad():
        expected, got = reference(**batch).logits, quantised(**batch).logits
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    error = relative_error(got, expected)
    assert 0 < error < BOUND[format], error  # > 0: the packed weights are really used


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("name", DUAL)
def test_quantised_dual_encoder_scores_stay_close_to_float32(name, format):
    reference, quantised = pair(name, format)
    batch = dual_batch(reference)
    with torch.no_grad():
        expected, got = reference(**batch), quantised(**batch)
    for field in ("image_embeds", "text_embeds"):
        error = relative_error(getattr(got, field), getattr(expected, field))
        assert 0 < error < BOUND[format], (field, error)


def test_every_linear_is_packed_and_named_in_the_state_dict():
    _, quantised = pair("llava-1.5-tiny", "int8")
    state = quantised.state_dict()
    q_proj = "llm.layers.0.attn.q_proj"
    assert f"{q_proj}.weight" not in state
    assert state[f"{q_proj}.weight_int8"].dtype == torch.int8 and state[f"{q_proj}.weight_int8"].dim() == 4
    assert state[f"{q_proj}.weight_scales"].dtype == torch.float32
    assert state[f"{q_proj}.weight_col_sums"].dtype == torch.int32
    assert "llm.lm_head.weight_int8" in state and "abstractor.layers.0.weight_int8" in state
    # Norms, embeddings and the patch convolution keep their float weights.
    assert state["llm.embed_tokens.weight"].dtype == torch.float32
    assert state["vision.patch_embed.weight"].dtype == torch.float32
    assert not any(k.endswith(".weight") and ("proj" in k or "fc" in k) for k in state)
    assert not any(p.requires_grad for n, p in quantised.named_parameters() if "weight_" in n)
    _, bf16 = pair("llava-1.5-tiny", "bf16")
    assert bf16.state_dict()[f"{q_proj}.weight_bf16"].dtype == torch.bfloat16


def test_quantised_generate_runs_and_follows_the_quantised_logits():
    _, quantised = pair("llava-1.5-tiny", "int8")
    batch = decoder_batch(quantised, batch=2)
    with torch.no_grad():
        out = quantised.generate(batch["input_ids"], batch["pixel_values"], max_new_tokens=6, eos_token_id=[])
        first = quantised(**batch).logits[:, -1].argmax(-1)
    prompt = batch["input_ids"].shape[1]
    assert out.shape == (2, prompt + 6)
    assert torch.equal(out[:, prompt], first)  # the cached decode runs the same packed layers


def test_pickle_and_deepcopy_keep_the_format_and_the_outputs():
    _, quantised = pair("llava-1.5-tiny", "bf16")
    batch = decoder_batch(quantised)
    restored = pickle.loads(pickle.dumps(quantised))
    assert vlmzoo.models.quantize.weight_format(restored) == "bf16" and not restored.training
    with torch.no_grad():
        torch.testing.assert_close(restored(**batch).logits, quantised(**batch).logits, rtol=0, atol=0)


def test_unknown_format_names_the_choices():
    torch.manual_seed(0)
    model = vlmzoo.build("llava-1.5-tiny")
    with pytest.raises(ValueError, match=r"'fp8' is not one of 'bf16', 'int8'"):
        model.quantize("fp8")
    assert vlmzoo.models.quantize.weight_format(model) == "float"


@pytest.mark.parametrize("second", FORMATS)
def test_quantising_twice_is_an_error(second):
    _, quantised = pair("llava-1.5-tiny", "int8")
    with pytest.raises(RuntimeError, match=r"already quantised \(int8\)"):
        quantised.quantize(second)


def test_training_a_quantised_model_is_an_error():
    _, quantised = pair("siglip-tiny", "int8")
    with pytest.raises(RuntimeError, match=r"quantised \(int8\) for inference: it cannot be trained"):
        quantised.train()
    assert not quantised.training
    with pytest.raises(RuntimeError, match="cannot be trained"):
        quantised.requires_grad_(True)
    from vlmzoo.data import make_task
    from vlmzoo.training.train import task_overrides

    task = make_task("shapes", seed=0, n_train=8, n_val=0, n_test=4)
    config = vlmzoo.resolve_config("llava-1.5-tiny")
    quantised = vlmzoo.build(config, **task_overrides(config, task.tokenizer)).quantize("bf16")
    with pytest.raises(RuntimeError, match=r"quantised \(bf16\) for inference: it cannot be trained"):
        vlmzoo.train(quantised, task, 1, progress=False)
    assert not quantised.training and all(not m.training for m in quantised.modules())


def test_saving_a_quantised_model_is_an_error(tmp_path):
    _, quantised = pair("llava-1.5-tiny", "int8")
    with pytest.raises(ValueError, match=r"save_pretrained: this model is quantised \(int8\)"):
        quantised.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q" / "model.safetensors").exists()


def test_cli_generate_quantises_before_answering(capsys):
    from vlmzoo.cli import main

    assert main(["generate", "llava-1.5-tiny", "--image", "camera", "--max-new-tokens", "3", "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "linear layers in int8" in out and "answer:" in out
