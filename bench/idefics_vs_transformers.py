"""IDEFICS (v1) end to end, vlmzoo (float32 and int8) vs transformers' IdeficsForVisionText2Text (float32,
sdpa), same random weights and inputs: prefill latency and greedy decode tokens/s at batch 1 and 8.

    python bench/idefics_vs_transformers.py [--shape small] [--batches 1,8] [--new-tokens 16] [--results bench/RESULTS.md]

One process; the implementations' rounds are interleaved (each round runs every implementation once), so
a slow spell of a shared machine hits all of them alike; each time is the best of --repeats. Decode
tokens/s = batch x (new - 1) / (time of `new` tokens - time of 1 token): prefill and set-up cancel out.
Prints a markdown table with ratios against transformers float32 (> 1: vlmzoo is faster)."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

import torch
from timing import commit, report  # bench/timing.py: what the benchmarks share

import vlmzoo

# (vision width, vision layers, image size, patch, LM width, LM layers, LM heads, LM mlp, latents, interval)
SHAPES = {
    "tiny": (128, 3, 64, 8, 256, 4, 8, 688, 8, 2),
    "small": (384, 6, 224, 14, 512, 8, 8, 1376, 64, 2),
}
VOCAB = 32000


def hf_idefics(shape: str, folder: str):
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    vw, vl, size, patch, h, layers, heads, mlp, latents, interval = SHAPES[shape]
    config = IdeficsConfig(
        vocab_size=VOCAB, additional_vocab_size=2, hidden_size=h, intermediate_size=mlp, num_hidden_layers=layers,
        num_attention_heads=heads, cross_layer_interval=interval, use_resampler=True, freeze_text_layers=False,
        freeze_vision_layers=False,
        vision_config=dict(embed_dim=vw, image_size=size, intermediate_size=4 * vw, patch_size=patch,
                           num_hidden_layers=vl, num_attention_heads=vw // 64, hidden_act="gelu"),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=latents, resampler_depth=2,
                              resampler_n_heads=vw // 64, resampler_head_dim=64))
    torch.manual_seed(0)
    model = IdeficsForVisionText2Text(config).eval()
    with torch.no_grad():  # open the gates (they start at 0), so the blocks' work shows in the logits
        for name, p in model.named_parameters():
            if "alpha" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(folder)
    return IdeficsForVisionText2Text.from_pretrained(folder, attn_implementation="sdpa").eval()


def inputs(shape: str, batch: int, text_tokens: int):
    """One image after a few words, then text; image_attention_mask as IdeficsProcessor builds it."""
    g = torch.Generator().manual_seed(0)
    size = SHAPES[shape][2]
    fake, image = VOCAB, VOCAB + 1
    rows = [[1, 5, 6, fake, image, fake] + torch.randint(5, 1000, (text_tokens,), generator=g).tolist()
            for _ in range(batch)]
    ids = torch.tensor(rows)
    mask = ((ids == image).long().cumsum(1) > 0).long().unsqueeze(-1)
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), image_attention_mask=mask,
                pixel_values=torch.randn(batch, 1, 3, size, size, generator=g))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as folder:
        reference = hf_idefics(args.shape, folder)
        ours = vlmzoo.from_pretrained(folder).eval()
        ours_int8 = vlmzoo.from_pretrained(folder).eval().quantize("int8")
    new = args.new_tokens
    impls = {
        "transformers float32": (reference, lambda m, x, n: m.generate(**x, do_sample=False, eos_token_id=None,
                                                                       pad_token_id=0, min_new_tokens=n,
                                                                       max_new_tokens=n)),
        "vlmzoo float32": (ours, lambda m, x, n: m.generate(**x, eos_token_id=[], max_new_tokens=n)),
        "vlmzoo int8": (ours_int8, lambda m, x, n: m.generate(**x, eos_token_id=[], max_new_tokens=n)),
    }
    rows = []
    with torch.inference_mode():
        x = inputs(args.shape, 1, args.text_tokens)
        expected = reference(**x).logits
        parity = (ours(**x).logits - expected).abs().max().item()
        for batch in (int(b) for b in args.batches.split(",")):
            x = inputs(args.shape, batch, args.text_tokens)
            best = {(name, kind): float("inf") for name in impls for kind in ("prefill", "one", "all")}
            for name, (model, generate) in impls.items():  # warm-up
                model(**x)
                generate(model, x, 2)
            for _ in range(args.repeats):
                for name, (model, generate) in impls.items():
                    for kind, run in (("prefill", lambda: model(**x)), ("one", lambda: generate(model, x, 1)),
                                      ("all", lambda: generate(model, x, new))):
                        start = time.perf_counter()
                        run()
                        best[name, kind] = min(best[name, kind], time.perf_counter() - start)
            for name in impls:
                decode = best[name, "all"] - best[name, "one"]
                rows.append({"impl": name, "batch": batch, "prefill_ms": best[name, "prefill"] * 1e3,
                             "decode_tok_s": batch * (new - 1) / decode if decode > 0 else float("nan")})

    lines = [f"### IDEFICS end to end: shape `{args.shape}` {SHAPES[args.shape]}, {args.text_tokens} text tokens + 1 image, "
             f"{new} new tokens", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, torch "
             f"{torch.__version__}, {datetime.date.today()}, commit {commit()}; load average before the run {load:.1f} "
             f"(shared machine: ratios, measured interleaved, are what carries over); float32 logits max diff vs "
             f"transformers {parity:.1e}", "",
             "| impl | batch | prefill ms | decode tok/s | prefill vs transformers | decode vs transformers |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        base = next(o for o in rows if o["impl"] == "transformers float32" and o["batch"] == r["batch"])
        lines.append(f"| {r['impl']} | {r['batch']} | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} | "
                     f"{base['prefill_ms'] / r['prefill_ms']:.2f}x | {r['decode_tok_s'] / base['decode_tok_s']:.2f}x |")
    lines.append("\nTargets (issue 19): prefill >= 1.2x and decode >= 1.5x transformers float32.")
    text = "\n".join(lines)
    report(text, args.results)


if __name__ == "__main__":
    main()
