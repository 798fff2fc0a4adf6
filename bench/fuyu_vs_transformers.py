"""Fuyu end to end, vlmzoo (float32 and int8) vs transformers' FuyuForCausalLM (float32, sdpa), the same
random weights and inputs: a left-padded batch of images of two sizes (different patch counts), prefill
latency and greedy decode tokens/s.

    python bench/fuyu_vs_transformers.py [--preset fuyu-small] [--sizes 240x180,120x240] [--new-tokens 32]

Everything runs in this one process; the implementations' rounds are interleaved (each round times every
implementation once), so a slow spell of a shared machine hits all of them alike, and each time is the best
of --repeats. Prints a markdown table whose ratios are against transformers' float32 measured here
(>1 means vlmzoo is faster)."""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import tempfile
import time

import torch
from timing import commit, report  # bench/timing.py: what the benchmarks share

import vlmzoo


def fuyu_batch(config: dict, sizes: list[tuple[int, int]], text_tokens: int) -> dict:
    """FuyuProcessor's layout for one image per row: rows of |SPEAKER| per patch closed by a newline, <s>,
    text; left-padded. image_patches: every patch of the batch, concatenated."""
    g = torch.Generator().manual_seed(0)
    p, channels = config["vision"]["patch_size"], config["vision"]["channels"]
    image_id, vocab = config["fusion"]["image_token_id"], config["llm"]["vocab"]
    newline = image_id + 1 if image_id + 1 < vocab else image_id - 1
    rows, patches = [], []
    for height, width in sizes:
        rows_, cols = -(-height // p), -(-width // p)
        patches.append(torch.randn(rows_ * cols, p * p * channels, generator=g))
        text = torch.randint(5, min(1000, vocab), (text_tokens,), generator=g).tolist()
        rows.append(([image_id] * cols + [newline]) * rows_ + [1] + text)
    length = max(len(r) for r in rows)
    return dict(input_ids=torch.tensor([[0] * (length - len(r)) + r for r in rows]),
                attention_mask=torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows]),
                image_patches=torch.cat(patches))


def best_of(fn, repeats: int, best: dict, key) -> None:
    start = time.perf_counter()
    fn()
    best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="fuyu-small")
    parser.add_argument("--sizes", default="240x180,120x240", help="image sizes HxW, one image per row")
    parser.add_argument("--text-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import FuyuForCausalLM

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    ours = vlmzoo.build(args.preset).eval()
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder, format="transformers")
        reference = FuyuForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    int8 = copy.deepcopy(ours).quantize("int8")
    x = fuyu_batch(ours.config, sizes, args.text_tokens)
    hf_x = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"], "pixel_values": x["image_patches"]}
    impls = {
        "transformers float32": (lambda: reference(**hf_x), lambda n: reference.generate(
            **hf_x, do_sample=False, eos_token_id=None, pad_token_id=0, min_new_tokens=n, max_new_tokens=n)),
        "vlmzoo float32": (lambda: ours(**x), lambda n: ours.generate(**x, eos_token_id=[], max_new_tokens=n)),
        "vlmzoo int8": (lambda: int8(**x), lambda n: int8.generate(**x, eos_token_id=[], max_new_tokens=n)),
    }
    best: dict = {}
    with torch.inference_mode():
        for prefill, generate in impls.values():  # warm-up
            prefill()
            generate(2)
        for _ in range(args.repeats):
            for name, (prefill, generate) in impls.items():
                best_of(prefill, args.repeats, best, (name, "prefill"))
                best_of(lambda: generate(1), args.repeats, best, (name, "one"))
                best_of(lambda: generate(args.new_tokens), args.repeats, best, (name, "all"))
    batch = len(sizes)
    rows = {}
    for name in impls:
        decode = best[name, "all"] - best[name, "one"]  # prefill and set-up cancel out
        rows[name] = (best[name, "prefill"] * 1e3, batch * (args.new_tokens - 1) / decode if decode > 0 else float("nan"))
    base_prefill, base_decode = rows["transformers float32"]
    tokens = x["input_ids"].shape[1]
    lines = [f"### Fuyu end to end: `{args.preset}`, images {args.sizes} (one per row, "
             f"{x['image_patches'].shape[0]} patches), {tokens} tokens per left-padded row, {args.new_tokens} new tokens",
             "", f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today()}, commit {commit()}", "",
             "| impl | prefill ms | decode tok/s | prefill speed-up | decode speed-up |", "|---|---|---|---|---|"]
    for name, (prefill_ms, decode_tok_s) in rows.items():
        lines.append(f"| {name} | {prefill_ms:.1f} | {decode_tok_s:.1f} | {base_prefill / prefill_ms:.2f}x | "
                     f"{decode_tok_s / base_decode:.2f}x |")
    lines.append("\nspeed-up = against transformers' float32 (sdpa) in the same process, rounds interleaved.")
    text = "\n".join(lines)
    report(text, args.results)


if __name__ == "__main__":
    main()
