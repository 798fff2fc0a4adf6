"""vlmzoo.Model is a torch.nn.Module over the C++ tensors themselves: the module tree mirrors the C++
one, state dicts, dtypes, hooks, copies and pickles behave as torch users expect, loading draws no
random weights, and torch's DistributedDataParallel averages gradients across processes."""
from __future__ import annotations

import copy
import datetime
import io
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import vlmzoo

TINY = "llava-1.5-tiny"


def tiny_inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.full((batch, model.visual_tokens_per_image), model.image_token_id)
    words = torch.randint(10, 200, (batch, 6), generator=g)
    input_ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), image, words], 1)
    return dict(input_ids=input_ids, pixel_values=torch.randn(batch, 3, 64, 64, generator=g))


def test_model_is_an_nn_module_whose_parameters_are_the_cpp_tensors():
    model = vlmzoo.build(TINY)
    assert isinstance(model, torch.nn.Module)
    cpp = dict(model._module.named_parameters())
    for name, p in model.named_parameters():
        assert isinstance(p, torch.nn.Parameter)
        assert p is cpp[name]  # the same Python object, so the same TensorImpl
    # named_modules mirrors the C++ tree
    assert [n for n, _ in model.named_modules()][1:] == list(model._module.named_modules().keys())[1:]
    assert "VitEncoder" in repr(model) and "LlamaLayer" in repr(model)


def test_an_in_place_change_through_python_reaches_the_cpp_forward():
    model = vlmzoo.build(TINY).eval()
    inputs = tiny_inputs(model)
    before = model(**inputs).logits
    with torch.no_grad():
        model.llm.norm.weight.mul_(2.0)
    assert not torch.equal(model(**inputs).logits, before)


def test_to_dtype_and_device_keywords_change_the_cpp_tensors():
    model = vlmzoo.build(TINY)
    model.to(device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model._module.parameters())
    inputs = tiny_inputs(model)
    inputs["pixel_values"] = inputs["pixel_values"].double()
    assert model(**inputs).logits.dtype == torch.float64


def test_forward_hooks_and_output_unpacking():
    model = vlmzoo.build(TINY).eval()
    seen = []
    handle = model.register_forward_hook(lambda module, args, output: seen.append(output.logits.shape))
    inputs = tiny_inputs(model)
    out = model(**inputs, labels=inputs["input_ids"])
    handle.remove()
    assert seen == [out.logits.shape]
    loss, logits = out  # transformers' order: loss first, then logits
    assert loss is out.loss and logits is out.logits and out[1] is out.logits


def test_deepcopy_and_torch_save_rebuild_an_equal_independent_model():
    model = vlmzoo.build(TINY).eval()
    inputs = tiny_inputs(model)
    expected = model(**inputs).logits
    twin = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (twin, loaded):
        assert torch.equal(other(**inputs).logits, expected)
    with torch.no_grad():
        twin.llm.norm.weight.zero_()
    assert torch.equal(model(**inputs).logits, expected)


def test_a_failed_load_state_dict_leaves_the_model_unchanged():
    model = vlmzoo.build(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.randn_like(v) for k, v in before.items()}
    state["llm.norm.weight"] = torch.full_like(state["llm.norm.weight"], float("nan"))
    with pytest.raises(ValueError, match=r"non-finite values .*llm\.norm\.weight"):
        model.load_state_dict(state)
    state["llm.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"llm\.norm\.weight: checkpoint \(3,\) vs model \(256,\)"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_from_pretrained_draws_no_random_weights(tmp_path):
    vlmzoo.build(TINY).save_pretrained(tmp_path)
    rng = torch.get_rng_state()
    vlmzoo.from_pretrained(tmp_path)
    assert torch.equal(torch.get_rng_state(), rng)  # building with initialize=False touched no generator
    vlmzoo.build(TINY)
    assert not torch.equal(torch.get_rng_state(), rng)  # while a fresh build does draw


def test_a_7b_config_builds_on_the_meta_device_in_moments():
    started = time.perf_counter()
    model = vlmzoo.Model("llava-1.5-7b", device="meta", initialize=False)
    assert model.num_parameters() == 7_063_427_072
    assert all(p.is_meta for p in model.parameters())
    assert time.perf_counter() - started < 30


def test_a_model_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"parameters, .* GiB in float.*more than this machine's"):
        vlmzoo.build(TINY, llm={"vocab": 1 << 20, "hidden": 1 << 16, "heads": 64, "layers": 64, "mlp": 1 << 17})


def test_torch_compile_of_the_whole_model_runs():
    model = vlmzoo.build(TINY).eval()
    inputs = tiny_inputs(model)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits)


# ---- DistributedDataParallel, gloo, 2 processes on this machine

def _ddp_worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    model = vlmzoo.from_pretrained(folder).train()
    model.freeze("vision")  # the compare recipe: frozen tower, so every trainable parameter is used
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    inputs = tiny_inputs(model, batch=4, seed=3)
    shard = {k: v[rank * 2:(rank + 1) * 2] for k, v in inputs.items()}
    ddp(**shard, labels=shard["input_ids"]).loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
    # Both ranks leave together: a gloo group torn down while its peer is still saving can wait forever.
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_gradients_equal_the_single_process_average(tmp_path):
    model = vlmzoo.build(TINY).train()
    model.save_pretrained(tmp_path / "model")
    model.freeze("vision")
    inputs = tiny_inputs(model, batch=4, seed=3)
    expected = {}
    for half in range(2):
        model.zero_grad()
        shard = {k: v[half * 2:(half + 1) * 2] for k, v in inputs.items()}
        model(**shard, labels=shard["input_ids"]).loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                expected[n] = expected.get(n, 0) + p.grad / 2
    port = 29500 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "model"), str(tmp_path / "grads.pt")), nprocs=2)
    grads = torch.load(tmp_path / "grads.pt")
    assert set(grads) == set(expected) and len(grads) > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_two_threads_sharing_one_model_give_the_sequential_results():
    import threading

    model = vlmzoo.build(TINY).eval()
    batches = [tiny_inputs(model, seed=s) for s in (11, 12)]
    expected = [(model(**b).logits, model.generate(**b, max_new_tokens=4, eos_token_id=[])) for b in batches]
    results: dict[int, tuple] = {}

    def run(i: int) -> None:
        for _ in range(3):
            results[i] = (model(**batches[i]).logits, model.generate(**batches[i], max_new_tokens=4, eos_token_id=[]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (logits, tokens) in enumerate(expected):
        assert torch.equal(results[i][0], logits) and torch.equal(results[i][1], tokens)


def test_the_fused_switch_reaches_the_cpp_model():
    model = vlmzoo.build(TINY)
    model.fused = False
    assert model._module.is_fused() is False and model.fused is False
    model.fused = True
    assert model._module.is_fused() is True
