"""Specification: repeated calls do not grow resident memory. After a warm-up (caches, allocator
pools, lazily built kernels), 1,000 forward calls and 100 generate calls of llava-1.5-tiny each
grow RSS by less than 4 MiB: a leak of 4.2 KB per forward (the logits alone are 139 KB) or of
42 KB per generate (its KV cache is 311 KB) would exceed that."""
import gc
import os

import pytest
import torch

import vlmzoo

BOUND_MIB = 4.0


def rss_mib() -> float:
    gc.collect()
    pages = int(open("/proc/self/statm").read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one pool, so the measure is of our allocations, not of thread stacks
    torch.manual_seed(0)
    yield vlmzoo.build("llava-1.5-tiny").eval()
    torch.set_num_threads(threads)


def prompt(model):
    ids = torch.tensor([[1] + [model.image_token_id] * model.visual_tokens_per_image + [5, 6, 7]])
    return ids, torch.randn(1, 3, 64, 64)


def test_a_thousand_forward_calls_keep_memory_flat(model):
    ids, pixels = prompt(model)
    with torch.no_grad():
        for _ in range(50):
            model(ids, pixels)
        before = rss_mib()
        for _ in range(1000):
            model(ids, pixels)
    growth = rss_mib() - before
    print(f"\nRSS growth over 1,000 forward calls: {growth:.2f} MiB (bound {BOUND_MIB})")
    assert growth < BOUND_MIB


def test_a_hundred_generate_calls_keep_memory_flat(model):
    ids, pixels = prompt(model)
    for _ in range(10):
        model.generate(ids, pixels, max_new_tokens=8, eos_token_id=[])
    before = rss_mib()
    for _ in range(100):
        out = model.generate(ids, pixels, max_new_tokens=8, eos_token_id=[])
    growth = rss_mib() - before
    print(f"\nRSS growth over 100 generate calls: {growth:.2f} MiB (bound {BOUND_MIB})")
    assert out.shape == (1, ids.size(1) + 8)
    assert growth < BOUND_MIB
