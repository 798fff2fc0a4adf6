"""The kind suite for the multiway-encoder kinds (vision beit3_patch, llm multiway, heads vqa /
retrieval / image_classification), which the decoder suite (test_slot_kinds.py) cannot hold: each,
in a tiny BEiT-3, builds, gives outputs of the right shapes in the three modes, passes gradients to
every parameter, runs the same fused and unfused, round-trips its config, and `info` counts the build."""
from __future__ import annotations

import pytest
import torch

import vlmzoo
from beit3_fixtures import beit3_batch
from multiway_kind_cases import MULTIWAY_KIND_CASES
from vlmzoo.models.multiway_encoder import MultiwayEncoderModel

CASES = [(slot, kind) for slot, kinds in MULTIWAY_KIND_CASES.items() for kind in kinds]
IDS = [f"{s}-{k}" for s, k in CASES]
# Only BEiT-3's masked-image-modeling token stays idle: checkpoints hold it, pretraining reads it.
IDLE = {"vision.mask_token"}


def build(slot: str, kind: str) -> MultiwayEncoderModel:
    preset, overrides = MULTIWAY_KIND_CASES[slot][kind]
    return vlmzoo.build(preset, **overrides)


def three_passes(model: MultiwayEncoderModel, seed: int = 1):
    ids, mask, pixels = beit3_batch(seed=seed, vocab=model.config["llm"]["vocab"],
                                    image_size=model.config["vision"]["image_size"])
    return (model(input_ids=ids, pixel_values=pixels, attention_mask=mask),
            model(pixel_values=pixels), model(input_ids=ids, attention_mask=mask))


@pytest.mark.parametrize("slot,kind", CASES, ids=IDS)
def test_kind_builds_runs_the_three_modes_and_trains(slot, kind):
    torch.manual_seed(0)
    model = build(slot, kind)
    assert isinstance(model, MultiwayEncoderModel)
    assert model.config[slot]["kind"] == kind.split("-", 1)[0]
    joint, vision, text = three_passes(model)
    d, v = model.config["llm"]["hidden"], model.visual_tokens_per_image
    head = model.config["head"]["kind"]
    assert vision.last_hidden_state.shape == (3, v, d) and text.last_hidden_state.shape == (3, 7, d)
    if head == "retrieval":
        assert joint.last_hidden_state is None and joint.logits_per_text.shape == (3, 3)
        assert vision.image_embeds.shape == (3, d) and text.text_embeds.shape == (3, d)
    else:
        assert joint.last_hidden_state.shape == (3, v + 7, d)
        logits = joint.logits if head == "vqa" else vision.logits
        assert logits.shape == (3, model.config["head"]["classes"])
    loss = sum(t.float().pow(2).mean() for out in (joint, vision, text) for t in out)
    loss.backward()
    unused = sorted(n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0)
    assert set(unused) == IDLE, unused


@pytest.mark.parametrize("slot,kind", CASES, ids=IDS)
def test_kind_runs_the_same_fused_and_unfused(slot, kind):
    model = build(slot, kind).eval()
    with torch.no_grad():
        fused = three_passes(model, seed=2)
        model.fused = False
        reference = three_passes(model, seed=2)
    for a, b in zip(fused, reference):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


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
    assert vlmzoo.visual_tokens_per_image(resolved) == model.visual_tokens_per_image == 17


def test_the_vl_expert_carries_the_joint_pass_of_its_layers_only():
    """VLMo's third expert (llm.vl_expert_layers): the top layer's ffn.C runs in a vision-language pass
    and not in a one-modality pass, where ffn.A / ffn.B route as before."""
    model = build("llm", "multiway-vl_expert")
    names = {n for n, _ in model.named_parameters()}
    assert "llm.layers.1.ffn.C.fc1.weight" in names and "llm.layers.0.ffn.C.fc1.weight" not in names
    joint, vision, text = three_passes(model)
    grads = {}
    for label, out in (("joint", joint), ("vision", vision), ("text", text)):
        model.zero_grad()
        out.last_hidden_state.pow(2).mean().backward()
        grads[label] = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    c, a, b = "llm.layers.1.ffn.C.fc1.weight", "llm.layers.1.ffn.A.fc1.weight", "llm.layers.1.ffn.B.fc1.weight"
    assert c in grads["joint"] and a not in grads["joint"] and b not in grads["joint"]
    assert a in grads["vision"] and c not in grads["vision"] and b not in grads["vision"]
    assert b in grads["text"] and c not in grads["text"] and a not in grads["text"]
    assert "llm.layers.0.ffn.A.fc1.weight" in grads["joint"]  # lower layers still route per modality


def test_text_padding_changes_nothing_of_the_real_tokens():
    """Padding is zeroed and masked as keys: appending pads leaves the real tokens' states as they were."""
    model = vlmzoo.build("beit3-tiny").eval()
    ids, _, pixels = beit3_batch(batch=2)
    padded = torch.cat([ids, torch.ones(2, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        short = model(input_ids=ids, pixel_values=pixels).last_hidden_state
        long = model(input_ids=padded, pixel_values=pixels, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(long[:, : short.size(1)], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    ({"abstractor": {"kind": "mlp"}}, "abstractor: the multiway_encoder assembly"),
    ({"llm": {"kind": "llama"}}, 'llm.kind: "llama" is not a multiway encoder'),
    ({"head": {"kind": "lm"}}, 'head.kind: "lm" is not a multiway-encoder head'),
    ({"llm": {"vl_expert_layers": 3}}, "llm.vl_expert_layers: 3 is more than llm.layers 2"),
])
def test_a_config_the_multiway_encoder_cannot_build_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        vlmzoo.build("beit3-tiny", **overrides)


def test_bad_inputs_are_clear_errors():
    model = vlmzoo.build("beit3-tiny")
    ids, mask, pixels = beit3_batch()
    with pytest.raises(ValueError, match="input_ids: token ids must lie in"):
        model(input_ids=ids + 1000)
    with pytest.raises(ValueError, match="attention_mask: expected the shape of input_ids"):
        model(input_ids=ids, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match="pixel_values: 2 images, but input_ids holds 3 texts"):
        model(input_ids=ids, pixel_values=pixels[:2])
    with pytest.raises(ValueError, match="needs input_ids, pixel_values or both"):
        model()
    with pytest.raises(ValueError, match="labels: the vqa head gives no logits for these inputs"):
        model(pixel_values=pixels, labels=torch.zeros(3, dtype=torch.long))


def test_model_pickles_deep_copies_and_saves(tmp_path):
    import copy
    import pickle

    model = vlmzoo.build("beit3-tiny").eval()
    ids, mask, pixels = beit3_batch()
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert isinstance(other, MultiwayEncoderModel)
            torch.testing.assert_close(other(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits, expected)
    model.save_pretrained(str(tmp_path))
    loaded = vlmzoo.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits, expected)


def test_quantized_linears_stay_close_and_refuse_training():
    model = vlmzoo.build("beit3-tiny").eval()
    ids, mask, pixels = beit3_batch()
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).last_hidden_state
        model.quantize("bf16")
        got = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).last_hidden_state
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    with pytest.raises(RuntimeError, match="quantised \\(bf16\\) for inference: it cannot be trained"):
        model.train()


# ---- DistributedDataParallel, gloo, 2 processes on this machine

def _ddp_worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    import datetime
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    model = vlmzoo.from_pretrained(folder).train()
    model.vision.mask_token.requires_grad_(False)  # pretraining's token: unused here
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ids, mask, pixels = beit3_batch(batch=4)
    labels = torch.arange(4) % 16
    s = slice(rank * 2, (rank + 1) * 2)
    ddp(input_ids=ids[s], pixel_values=pixels[s], attention_mask=mask[s], labels=labels[s]).loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_gradients_equal_the_single_process_average(tmp_path):
    import os

    import torch.multiprocessing as mp

    model = vlmzoo.build("beit3-tiny").train()
    model.save_pretrained(str(tmp_path / "model"))
    ids, mask, pixels = beit3_batch(batch=4)
    labels = torch.arange(4) % 16
    expected = {}
    for half in range(2):
        model.zero_grad()
        s = slice(half * 2, (half + 1) * 2)
        model(input_ids=ids[s], pixel_values=pixels[s], attention_mask=mask[s], labels=labels[s]).loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                expected[n] = expected.get(n, 0) + p.grad / 2
    port = 29500 + (os.getpid() + 500) % 1000
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "model"), str(tmp_path / "grads.pt")), nprocs=2)
    grads = torch.load(tmp_path / "grads.pt")
    assert set(grads) == set(expected) - {"vision.mask_token"} and len(grads) > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)
