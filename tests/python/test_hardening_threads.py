"""Specification: one model in eval mode, called from 4 Python threads at once, gives exactly the
results of the same calls made one after the other, for forward and generate; and the calls run in
parallel, the GIL released inside C++."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import vlmzoo
from vlmzoo.models.multiway_encoder import MultiwayEncoderModel

THREADS = 4
CALLS_PER_THREAD = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vlmzoo.build("llava-1.5-tiny").eval()


def inputs(model, i):
    """Call i's own prompt: different text, image and length per call, left-padded batches of 2."""
    g = torch.Generator().manual_seed(i)
    n_text = 3 + i % 4
    image = [model.image_token_id] * model.visual_tokens_per_image
    rows = [[1] + image + torch.randint(5, 500, (n_text,), generator=g).tolist(),
            [0] * 2 + [1] + image + torch.randint(5, 500, (n_text - 2,), generator=g).tolist()]
    mask = torch.tensor([[1] * len(rows[0]), [0] * 2 + [1] * (len(rows[1]) - 2)])
    return torch.tensor(rows), torch.randn(2, 3, 64, 64, generator=g), mask


def forward(model, i):
    ids, pixels, mask = inputs(model, i)
    with torch.no_grad():
        return model(ids, pixels, attention_mask=mask).logits


def generate(model, i):
    ids, pixels, mask = inputs(model, i)
    return model.generate(ids, pixels, attention_mask=mask, max_new_tokens=6, eos_token_id=[])


def sample(model, i):
    ids, pixels, mask = inputs(model, i)
    return model.generate(ids, pixels, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=20,
                          temperature=0.9, seed=100 + i, eos_token_id=[])


@pytest.mark.parametrize("call", [forward, generate, sample])
def test_four_threads_give_the_sequential_results(model, call):
    calls = list(range(THREADS * CALLS_PER_THREAD))
    sequential = [call(model, i) for i in calls]
    start = threading.Barrier(THREADS)

    def worker(t):
        start.wait()  # all threads enter the model together
        return [(i, call(model, i)) for i in calls[t::THREADS]]

    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = dict(pair for chunk in pool.map(worker, range(THREADS)) for pair in chunk)
    for i in calls:
        assert torch.equal(concurrent[i], sequential[i]), f"call {i} differs when run from {THREADS} threads"


def test_the_gil_is_released_while_generating(model):
    """Python code in another thread runs during a C++ call: with the GIL held it could not, at all."""
    ids, pixels, mask = inputs(model, 0)
    span = {}

    def long_call():
        span["start"] = time.perf_counter()
        model.generate(ids, pixels, attention_mask=mask, max_new_tokens=48, eos_token_id=[])
        span["end"] = time.perf_counter()

    worker = threading.Thread(target=long_call)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    length = span["end"] - span["start"]
    inside = [t for t in ticks if span["start"] + 0.2 * length < t < span["end"] - 0.2 * length]
    assert len(inside) > 0, f"the main thread never ran during a {length:.2f} s generate call"



# ---- the other families, cheaply: one call per thread (BLIP-2's Q-Former and OPT, InstructBLIP's
# instruction text, the CLIP and SigLIP dual encoders); decoders alternate forward and generate.
OTHER_FAMILIES = [n for n in vlmzoo.presets("tiny") if n != "llava-1.5-tiny"]


def family_call(model, i):
    g = torch.Generator().manual_seed(i)
    size = model.config["vision"]["image_size"]
    if isinstance(model, MultiwayEncoderModel):  # BEiT-3: 2 (image, text) pairs in one joint pass
        ids = torch.randint(5, 60, (2, 4 + i % 3), generator=g)
        with torch.no_grad():
            out = model(ids, torch.randn(2, 3, size, size, generator=g))
        return out.logits if out.logits is not None else out.last_hidden_state
    if not hasattr(model, "generate"):  # a dual encoder: 3 texts against 2 images
        ids = torch.randint(5, 500, (3, 4 + i % 3), generator=g)
        with torch.no_grad():
            return model(ids, torch.randn(2, 3, size, size, generator=g)).logits_per_text
    image = [model.image_token_id] * model.visual_tokens_per_image
    ids = torch.tensor([[1] + image + torch.randint(5, 500, (3 + i % 3,), generator=g).tolist()])
    pixels = torch.randn(1, 3, size, size, generator=g)
    extra = {}
    if model.config["abstractor"].get("instruction"):
        extra["qformer_input_ids"] = torch.randint(5, 500, (1, 2 + i % 4), generator=g)
    if i % 2:
        with torch.no_grad():
            return model(ids, pixels, **extra).logits
    return model.generate(ids, pixels, max_new_tokens=4, eos_token_id=[], **extra)


@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_four_threads_give_the_sequential_results_in_every_family(name):
    torch.manual_seed(0)
    model = vlmzoo.build(name).eval()
    sequential = [family_call(model, i) for i in range(THREADS)]
    start = threading.Barrier(THREADS)

    def worker(i):
        start.wait()
        return family_call(model, i)

    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(worker, range(THREADS)))
    for i in range(THREADS):
        assert torch.equal(concurrent[i], sequential[i]), f"{name}: call {i} differs when run from {THREADS} threads"
