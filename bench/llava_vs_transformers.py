"""LLaVA end to end, vlmzoo vs transformers (eager and sdpa attention), same random weights and
inputs, in one process: prefill latency, greedy decode tokens/s and peak RSS growth.

    python bench/llava_vs_transformers.py [--preset small|tiny] [--new-tokens 32] [--repeats 3]

Prints a markdown table with ratios (ours / theirs: >1 means vlmzoo is faster)."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import tempfile
import time

import torch

import vlmzoo


def hf_llava_for(config: dict, folder: str):
    """A transformers LLaVA with the shapes of a vlmzoo config, saved to `folder`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    v, l = config["vision"], config["llm"]
    vision = CLIPVisionConfig(hidden_size=v["hidden"], intermediate_size=v["mlp"], num_hidden_layers=v["layers"],
                              num_attention_heads=v["heads"], image_size=v["image_size"], patch_size=v["patch_size"])
    text = LlamaConfig(vocab_size=l["vocab"], hidden_size=l["hidden"], intermediate_size=l["mlp"],
                       num_hidden_layers=l["layers"], num_attention_heads=l["heads"],
                       num_key_value_heads=l["kv_heads"], max_position_embeddings=l["max_positions"],
                       rms_norm_eps=l["rms_eps"], pad_token_id=0)
    hf_config = LlavaConfig(vision_config=vision, text_config=text,
                            image_token_index=config["fusion"]["image_token_id"],
                            vision_feature_layer=v["feature_layers"][0], vision_feature_select_strategy=v["select"])
    torch.manual_seed(0)
    LlavaForConditionalGeneration(hf_config).save_pretrained(folder)


def load_hf(folder: str, attn: str):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation=attn).eval()


def inputs(model, batch: int, text_tokens: int):
    g = torch.Generator().manual_seed(0)
    size = model.config["vision"]["image_size"]
    image = [model.image_token_id] * model.visual_tokens_per_image
    rows = [[1] + image + torch.randint(5, min(1000, model.config["llm"]["vocab"]), (text_tokens,), generator=g).tolist() for _ in range(batch)]
    return dict(input_ids=torch.tensor(rows), attention_mask=torch.ones(batch, len(rows[0]), dtype=torch.long),
                pixel_values=torch.randn(batch, 3, size, size, generator=g))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name, forward, generate, batch, new_tokens, repeats):
    """Prefill = one forward over the prompt; decode rate from generate(new_tokens) minus
    generate(1), so prefill and set-up cancel out."""
    with torch.inference_mode():
        before = rss_mb()
        prefill = best_time(forward, repeats)
        one = best_time(lambda: generate(1), repeats)
        total = best_time(lambda: generate(new_tokens), repeats)
        peak = rss_mb() - before
    decode = max(total - one, 1e-9)
    return {"impl": name, "batch": batch, "prefill_ms": prefill * 1e3,
            "decode_tok_s": batch * (new_tokens - 1) / decode, "rss_growth_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = vlmzoo.resolve_config(args.preset)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        hf_llava_for(config, folder)
        ours = vlmzoo.from_pretrained(folder).eval()
        theirs = {attn: load_hf(folder, attn) for attn in ("eager", "sdpa")}
        for batch in [int(b) for b in args.batches.split(",")]:
            x = inputs(ours, batch, args.text_tokens)
            rows.append(measure("vlmzoo", lambda: ours(**x),
                                lambda n: ours.generate(**x, eos_token_id=[], max_new_tokens=n),
                                batch, args.new_tokens, args.repeats))
            for attn, hf in theirs.items():
                rows.append(measure(f"transformers-{attn}", lambda: hf(**x),
                                    lambda n: hf.generate(**x, do_sample=False, eos_token_id=None, pad_token_id=0,
                                                          min_new_tokens=n, max_new_tokens=n),
                                    batch, args.new_tokens, args.repeats))

    lines = [f"### LLaVA end to end: `{args.preset}`, {args.text_tokens} text tokens + 1 image, "
             f"{args.new_tokens} new tokens",
             "", f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today()}, commit {commit()}", "",
             "| impl | batch | prefill ms | decode tok/s | RSS growth MB | prefill speed-up | decode speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(o for o in rows if o["impl"] == "vlmzoo" and o["batch"] == r["batch"])
        lines.append(f"| {r['impl']} | {r['batch']} | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} | "
                     f"{r['rss_growth_mb']:.0f} | {r['prefill_ms'] / base['prefill_ms']:.2f}x | "
                     f"{base['decode_tok_s'] / r['decode_tok_s']:.2f}x |")
    lines.append("\nspeed-up = how much faster vlmzoo is than that row (1.00x on vlmzoo's own rows).")
    text = "\n".join(lines)
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + text + "\n")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    main()
