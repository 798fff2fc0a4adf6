"""LLaVA end to end, vlmzoo vs transformers (eager and sdpa attention), same random weights and
inputs: prefill latency, greedy decode tokens/s and peak memory.

    python bench/llava_vs_transformers.py [--preset llava-1.5-small] [--batches 1,8] [--new-tokens 32]

Each implementation runs in a process of its own (spawned); their rounds are interleaved, one process
at a time, and each time is the best of --repeats. Peak memory is the resident high-water mark
(VmHWM, reset through /proc/self/clear_refs) while prefill and generate run, above the resident
size before them: what running costs beyond holding the weights.
Prints a markdown table with ratios (>1 means vlmzoo is faster / leaner)."""
from __future__ import annotations

import argparse
import multiprocessing
import datetime
import os
import platform
import tempfile
import time

import torch
from timing import commit, report  # bench/timing.py: what the benchmarks share

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


def load_hf(folder: str, attn: str, dtype: torch.dtype = torch.float32):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation=attn, dtype=dtype).eval()


def inputs(config: dict, batch: int, text_tokens: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    size = config["vision"]["image_size"]
    image = [config["fusion"]["image_token_id"]] * vlmzoo.visual_tokens_per_image(config)
    vocab = config["llm"]["vocab"]
    rows = [[1] + image + torch.randint(5, min(1000, vocab), (text_tokens,), generator=g).tolist()
            for _ in range(batch)]
    return dict(input_ids=torch.tensor(rows), attention_mask=torch.ones(batch, len(rows[0]), dtype=torch.long),
                pixel_values=torch.randn(batch, 3, size, size, generator=g).to(dtype))


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


def worker(conn, impl: str, folder: str, args) -> None:
    """One implementation in a process of its own, running what the parent asks, one call at a time:
    ("prefill" | "generate", batch, new_tokens) -> seconds; ("reset_peak",) / ("peak",) -> MB."""
    torch.set_num_threads(args.threads)
    config = vlmzoo.resolve_config(args.preset)
    dtype = getattr(torch, args.dtype)
    if impl == "vlmzoo":
        model = vlmzoo.from_pretrained(folder).eval().to(dtype)
        generate = lambda x, n: model.generate(**x, eos_token_id=[], max_new_tokens=n)  # noqa: E731
    else:
        model = load_hf(folder, impl.split("-")[1], dtype)
        generate = lambda x, n: model.generate(**x, do_sample=False, eos_token_id=None,  # noqa: E731
                                               pad_token_id=0, min_new_tokens=n, max_new_tokens=n)
    inputs_by_batch = {}

    def run(command) -> float:
        kind, batch, new_tokens = command
        x = inputs_by_batch.setdefault(batch, inputs(config, batch, args.text_tokens, dtype))
        start = time.perf_counter()
        model(**x) if kind == "prefill" else generate(x, new_tokens)
        return time.perf_counter() - start

    with torch.inference_mode():
        serve(conn, run)


def serve(conn, run) -> None:
    """A benchmark worker's command loop (this file's and train_vs_transformers.py's): "stop" ends it,
    "reset_peak" and "peak" answer with memory (MB), any other command is answered with run(command)."""
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        if command[0] == "reset_peak":
            reset_peak()
            conn.send(status_mb("VmRSS"))
        elif command[0] == "peak":
            conn.send(status_mb("VmHWM"))
        else:
            conn.send(run(command))


IMPLS = ("vlmzoo", "transformers-eager", "transformers-sdpa")


def measure_all(folder: str, batches: list[int], args) -> list[dict]:
    """Loads every implementation in its own process, then interleaves their rounds (one process
    runs at a time), so a slow spell of the machine hits all of them alike. Best of --repeats."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = {}, []
    for impl in IMPLS:
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, impl, folder, args))
        process.start()
        pipes[impl], processes = parent, processes + [process]

    def ask(impl, *command):
        pipes[impl].send(command)
        return pipes[impl].recv()

    rows = []
    for batch in batches:
        base = {impl: ask(impl, "reset_peak") for impl in IMPLS}
        best = {(impl, kind): float("inf") for impl in IMPLS for kind in ("prefill", "one", "all")}
        for impl in IMPLS:  # warm-up
            ask(impl, "prefill", batch, 0)
            ask(impl, "generate", batch, 2)
        for _ in range(args.repeats):
            for impl in IMPLS:
                for kind, command in (("prefill", ("prefill", batch, 0)), ("one", ("generate", batch, 1)),
                                      ("all", ("generate", batch, args.new_tokens))):
                    best[impl, kind] = min(best[impl, kind], ask(impl, *command))
        for impl in IMPLS:
            decode = best[impl, "all"] - best[impl, "one"]  # prefill and set-up cancel out
            rows.append({"impl": impl, "batch": batch, "prefill_ms": best[impl, "prefill"] * 1e3,
                         "decode_tok_s": batch * (args.new_tokens - 1) / decode if decode > 0 else float("nan"),
                         "peak_mb": ask(impl, "peak") - base[impl]})
    for impl in IMPLS:
        pipes[impl].send(("stop",))
    for process in processes:
        process.join()
    return rows


def linear_shapes(config: dict, batch: int, text_tokens: int) -> tuple[list, list]:
    """(n_in, n_out, rows) of every matmul a LLaVA forward over the prompt needs (prefill), and of
    one decode step: the vision tower up to its feature layer, projector, decoder, lm_head."""
    v, l = config["vision"], config["llm"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    vit_rows = batch * (patches + (1 if v["class_token"] else 0))
    feature = v["feature_layers"][0] if isinstance(v["feature_layers"], list) else v["feature_layers"]
    vit_layers = feature % (v["layers"] + 1)  # -2 of 12 layers: the output of layer 11 is used
    h, hd, d = l["hidden"], l["head_dim"], v["hidden"]
    prompt = batch * (1 + vlmzoo.visual_tokens_per_image(config) + text_tokens)

    def decoder(rows):
        layer = [(h, l["heads"] * hd, rows), (h, l["kv_heads"] * hd, rows), (h, l["kv_heads"] * hd, rows),
                 (l["heads"] * hd, h, rows), (h, l["mlp"], rows), (h, l["mlp"], rows), (l["mlp"], h, rows)]
        return layer * l["layers"]

    vit = [(d, d, vit_rows)] * 4 + [(d, v["mlp"], vit_rows), (v["mlp"], d, vit_rows)]
    projector = [(d, h, batch * vlmzoo.visual_tokens_per_image(config))]
    projector += [(h, h, projector[0][2])] * (config["abstractor"].get("depth", 1) - 1)
    prefill = vit * vit_layers + projector + decoder(prompt) + [(h, l["vocab"], prompt)]
    return prefill, decoder(batch) + [(h, l["vocab"], batch)]


def gemm_floor(config: dict, batches: list[int], args) -> list[dict]:
    """The matmuls alone (torch.mm into preallocated outputs, a weight of its own for each so decode
    streams them from memory as a model must): what any implementation calling the same BLAS pays."""
    torch.set_num_threads(args.threads)
    rows = []
    for batch in batches:
        prefill, step = linear_shapes(config, batch, args.text_tokens)
        dtype = getattr(torch, args.dtype)
        weights = {i: (torch.randn(n_out, n_in) * 0.02).to(dtype) for i, (n_in, n_out, _) in enumerate(prefill)}
        inputs_ = {}
        for i, (n_in, _, m) in enumerate(prefill):
            inputs_.setdefault((n_in, m), torch.randn(m, n_in).to(dtype))
        step_weights = [(torch.randn(n_out, n_in) * 0.02).to(dtype) for n_in, n_out, _ in step]
        x_step = {n_in: torch.randn(batch, n_in).to(dtype) for n_in, _, _ in step}
        outs = {}  # preallocated: the floor times the matmuls, not the allocator's page faults
        for i, (n_in, n_out, m) in enumerate(prefill):
            outs.setdefault((n_out, m), torch.empty(m, n_out, dtype=dtype))
        step_outs = {n_out: torch.empty(batch, n_out, dtype=dtype) for _, n_out, _ in step}

        def run_prefill():
            for i, (n_in, n_out, m) in enumerate(prefill):
                torch.mm(inputs_[(n_in, m)], weights[i].t(), out=outs[(n_out, m)])

        def run_step():
            for w in step_weights:
                torch.mm(x_step[w.shape[1]], w.t(), out=step_outs[w.shape[0]])

        with torch.inference_mode():
            t_prefill = best_time(run_prefill, args.repeats)
            t_step = best_time(run_step, args.repeats * 5)
        rows.append({"impl": "matmuls only (floor)", "batch": batch, "prefill_ms": t_prefill * 1e3,
                     "decode_tok_s": batch / t_step, "peak_mb": float("nan")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
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
        rows += measure_all(folder, batches, args)
    with context.Pool(1) as pool:
        rows += pool.apply(gemm_floor, (config, batches, args))
    rows.sort(key=lambda r: r["batch"])

    lines = [f"### LLaVA end to end: `{args.preset}`, {args.text_tokens} text tokens + 1 image, "
             f"{args.new_tokens} new tokens",
             "", f"{platform.processor() or platform.machine()}, {args.threads} threads, {args.dtype}, "
             f"torch {torch.__version__}, "
             f"{datetime.date.today()}, commit {commit()}", "",
             "| impl | batch | prefill ms | decode tok/s | peak MB above weights | prefill speed-up | decode speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(o for o in rows if o["impl"] == "vlmzoo" and o["batch"] == r["batch"])
        lines.append(f"| {r['impl']} | {r['batch']} | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} | "
                     f"{r['peak_mb']:.0f} | {r['prefill_ms'] / base['prefill_ms']:.2f}x | "
                     f"{base['decode_tok_s'] / r['decode_tok_s']:.2f}x |")
    lines.append("\nspeed-up = how much faster vlmzoo is than that row (1.00x on vlmzoo's own rows); "
                 "below 1 on the floor row is how far vlmzoo is from it.")
    text = "\n".join(lines)
    report(text, args.results)


if __name__ == "__main__":
    main()
