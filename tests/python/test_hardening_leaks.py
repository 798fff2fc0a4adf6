"""Specification: repeated calls do not grow resident memory. After a warm-up (caches, allocator
pools, lazily built kernels), 1,000 forward calls and 100 generate calls each grow RSS by less than
4 MiB, for LLaVA-1.5 (Llama, ViT, MLP projector) and BLIP-2 (OPT, EVA ViT, Q-Former): a leak of 4.2 KB
per forward (llava-1.5-tiny's logits alone are 139 KB) or of 42 KB per generate (its KV cache is
311 KB) would exceed that. The other tiny families (InstructBLIP's instruction-reading Q-Former, the
CLIP and SigLIP dual encoders) get 200 forward calls (and InstructBLIP 50 generate calls) under the
same bound: 21 KB per forward, 84 KB per generate."""
import gc
import os

import pytest
import torch

import vlmzoo

BOUND_MIB = 4.0
# preset -> (forward calls, generate calls)
CALLS = {"llava-1.5-tiny": (1000, 100), "blip2-opt-tiny": (1000, 100), "instructblip-tiny": (200, 50),
         "clip-tiny": (200, 0), "siglip-tiny": (200, 0), "llava-1.5-micro": (500, 50), "blip2-opt-micro": (500, 50),
         "fuyu-tiny": (500, 50), "fuyu-micro": (500, 50),
         "idefics-tiny": (500, 50), "flamingo-tiny": (500, 50), "flamingo-micro": (500, 50),
         "beit3-tiny": (500, 0), "beit3-micro": (500, 0)}


def rss_mib() -> float:
    gc.collect()
    pages = int(open("/proc/self/statm").read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one pool, so the measure is of our allocations, not of thread stacks
    yield
    torch.set_num_threads(threads)


def test_every_tiny_preset_is_measured():
    assert sorted(CALLS) == sorted(vlmzoo.presets("tiny"))


def model_and_inputs(name):
    torch.manual_seed(0)
    model = vlmzoo.build(name).eval()
    size = model.config["vision"]["image_size"]
    pixels = torch.randn(1, 3, size, size)
    if not hasattr(model, "generate"):  # a dual or multiway encoder: texts and images
        mask = {"attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])}
        return model, (torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]]), torch.randn(2, 3, size, size)), mask
    ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5, 6, 7]])
    extra = {"qformer_input_ids": torch.tensor([[1, 5, 6]])} if model.config["abstractor"].get("instruction") else {}
    return model, (ids, pixels), extra


@pytest.mark.parametrize("name", sorted(CALLS))
def test_forward_calls_keep_memory_flat(name):
    model, args, extra = model_and_inputs(name)
    calls = CALLS[name][0]
    with torch.no_grad():
        for _ in range(50):
            model(*args, **extra)
        before = rss_mib()
        for _ in range(calls):
            model(*args, **extra)
    growth = rss_mib() - before
    print(f"\n{name}: RSS growth over {calls} forward calls: {growth:.2f} MiB (bound {BOUND_MIB})")
    assert growth < BOUND_MIB


@pytest.mark.parametrize("name", sorted(n for n, (_, g) in CALLS.items() if g))
def test_generate_calls_keep_memory_flat(name):
    model, (ids, pixels), extra = model_and_inputs(name)
    calls = CALLS[name][1]
    for _ in range(10):
        model.generate(ids, pixels, max_new_tokens=8, eos_token_id=[], **extra)
    before = rss_mib()
    for _ in range(calls):
        out = model.generate(ids, pixels, max_new_tokens=8, eos_token_id=[], **extra)
    growth = rss_mib() - before
    print(f"\n{name}: RSS growth over {calls} generate calls: {growth:.2f} MiB (bound {BOUND_MIB})")
    assert out.shape == (1, ids.size(1) + 8)
    assert growth < BOUND_MIB
