"""LLaVA end to end, vlmzoo vs transformers (eager and sdpa attention), same random weights and
inputs: prefill latency, greedy decode tokens/s and peak memory.

    python bench/llava_vs_transformers.py [--preset llava-1.5-small] [--batches 1,8] [--new-tokens 32]

Each implementation runs in a process of its own (spawned, one after the other), and each time is the
best of --repeats. Peak memory is the resident high-water mark
(VmHWM, reset through /proc/self/clear_refs) while prefill and generate run, above the resident
size before them: what running costs beyond holding the weights.
Prints a markdown table with ratios (>1 means vlmzoo is faster / leaner)."""
from __future__ import annotations

import argparse
import multiprocessing
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


def inputs(config: dict, batch: int, text_tokens: int):
    g = torch.Generator().manual_seed(0)
    size = config["vision"]["image_size"]
    image = [config["fusion"]["image_token_id"]] * vlmzoo.visual_tokens_per_image(config)
    vocab = config["llm"]["vocab"]
    rows = [[1] + image + torch.randint(5, min(1000, vocab), (text_tokens,), generator=g).tolist()
            for _ in range(batch)]
    return dict(input_ids=torch.tensor(rows), attention_mask=torch.ones(batch, len(rows[0]), dtype=torch.long),
                pixel_values=torch.randn(batch, 3, size, size, generator=g))


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Sets VmHWM back to the current resident size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


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
        reset_peak()
        before = status_mb("VmRSS")
        prefill = best_time(forward, repeats)
        one = best_time(lambda: generate(1), repeats)
        total = best_time(lambda: generate(new_tokens), repeats)
        peak = status_mb("VmHWM") - before
    decode = total - one  # not positive only when noise swamps a too short run
    return {"impl": name, "batch": batch, "prefill_ms": prefill * 1e3,
            "decode_tok_s": batch * (new_tokens - 1) / decode if decode > 0 else float("nan"), "peak_mb": peak}


def run_one(impl: str, folder: str, batches: list[int], args) -> list[dict]:
    """Loads one implementation in this (fresh) process and measures it at every batch size."""
    torch.set_num_threads(args.threads)
    config = vlmzoo.resolve_config(args.preset)
    rows = []
    if impl == "vlmzoo":
        ours = vlmzoo.from_pretrained(folder).eval()
        for batch in batches:
            x = inputs(config, batch, args.text_tokens)
            rows.append(measure("vlmzoo", lambda: ours(**x),
                                lambda n: ours.generate(**x, eos_token_id=[], max_new_tokens=n),
                                batch, args.new_tokens, args.repeats))
        return rows
    hf = load_hf(folder, impl.split("-")[1])
    for batch in batches:
        x = inputs(config, batch, args.text_tokens)
        rows.append(measure(impl, lambda: hf(**x),
                            lambda n: hf.generate(**x, do_sample=False, eos_token_id=None, pad_token_id=0,
                                                  min_new_tokens=n, max_new_tokens=n),
                            batch, args.new_tokens, args.repeats))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = vlmzoo.resolve_config(args.preset)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        hf_llava_for(config, folder)
        for impl in ("vlmzoo", "transformers-eager", "transformers-sdpa"):
            with context.Pool(1) as pool:
                rows += pool.apply(run_one, (impl, folder, batches, args))
    rows.sort(key=lambda r: r["batch"])

    lines = [f"### LLaVA end to end: `{args.preset}`, {args.text_tokens} text tokens + 1 image, "
             f"{args.new_tokens} new tokens",
             "", f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
             f"{datetime.date.today()}, commit {commit()}", "",
             "| impl | batch | prefill ms | decode tok/s | peak MB above weights | prefill speed-up | decode speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(o for o in rows if o["impl"] == "vlmzoo" and o["batch"] == r["batch"])
        lines.append(f"| {r['impl']} | {r['batch']} | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} | "
                     f"{r['peak_mb']:.0f} | {r['prefill_ms'] / base['prefill_ms']:.2f}x | "
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
