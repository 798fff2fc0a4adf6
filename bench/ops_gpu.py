"""Device benchmark for bench/gpu_check.sh: each vlmzoo op vs torch's own on one device, then LLaVA
end to end (prefill and greedy decode) vs transformers (eager and sdpa), same random weights.

    PYTHONPATH=python python bench/ops_gpu.py [--device cuda] [--dtypes bfloat16,float32] [--preset ...]

Runs on any device (`--device cpu --preset llava-1.5-tiny` is a quick dry run). Prints markdown tables;
--results FILE appends them with the device, torch version, date and commit.
"""
import argparse
import datetime
import importlib.util
import os
import subprocess
import tempfile
import time

import torch
import torch.nn.functional as F

import vlmzoo
import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)

ops = torch.ops.vlmzoo


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(fn, device, repeats=20, inner=10):
    for _ in range(3):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return best * 1e3


def op_cases(device, dtype, batch):
    r = lambda *s: torch.randn(*s, device=device, dtype=dtype)  # noqa: E731
    T, D, H, d, mlp, cache = 576, 768, 12, 64, 2048, 1024
    x, res, w, b = r(batch, T, D), r(batch, T, D), r(D), r(D)
    gate, up = r(batch, T, 2 * mlp).chunk(2, -1)
    q, k, v = r(batch, H, T, d), r(batch, H, T, d), r(batch, H, T, d)
    angles = torch.rand(batch, T, d // 2, device=device) * 6.28
    cos, sin = torch.cat([angles, angles], -1).cos().to(dtype), torch.cat([angles, angles], -1).sin().to(dtype)
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]
    q1, kc, vc = r(batch, H, 1, d), r(batch, H, cache, d), r(batch, H, cache, d)
    return [
        ("rms_norm", lambda: ops.rms_norm(x, w, 1e-6), lambda: F.rms_norm(x, (D,), w, 1e-6)),
        ("add_rms_norm", lambda: ops.add_rms_norm(x, res, w, 1e-6), lambda: F.rms_norm(x + res, (D,), w, 1e-6)),
        ("layer_norm", lambda: ops.layer_norm(x, w, b, 1e-5), lambda: F.layer_norm(x, (D,), w, b, 1e-5)),
        ("add_layer_norm", lambda: ops.add_layer_norm(x, res, w, b, 1e-5),
         lambda: F.layer_norm(x + res, (D,), w, b, 1e-5)),
        ("swiglu", lambda: ops.swiglu(gate, up), lambda: F.silu(gate) * up),
        ("bias_act gelu_tanh", lambda: ops.bias_act(gate, None, "gelu_tanh"),
         lambda: F.gelu(gate, approximate="tanh")),
        ("rope q+k", lambda: ops.rope(q, k, cos, sin), lambda: ops.rope_reference(q, k, cos, sin)),
        ("attention prefill causal", lambda: ops.attention(q, k, v, causal),
         lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        ("attention decode 1k cache", lambda: ops.attention(q1, kc, vc),
         lambda: F.scaled_dot_product_attention(q1, kc, vc)),
    ]


def op_table(device, dtypes, batches):
    lines = ["| op | dtype | batch | ours ms | torch ms | speed-up |", "|---|---|---|---:|---:|---:|"]
    for dtype in dtypes:
        for batch in batches:
            for name, ours, theirs in op_cases(device, dtype, batch):
                a, b = best_ms(ours, device), best_ms(theirs, device)
                lines.append(f"| {name} | {str(dtype).replace('torch.', '')} | {batch} | {a:.3f} | {b:.3f} | "
                             f"{b / a:.2f}x |")
                print(lines[-1], flush=True)
    return lines


def end_to_end(device, dtype, preset, new_tokens):
    """Prefill ms and decode tokens/s for vlmzoo and transformers (eager, sdpa) on `device`."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llava_vs_transformers.py")
    spec = importlib.util.spec_from_file_location("llava_vs_transformers", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    config = vlmzoo.resolve_config(preset)
    lines = ["| impl | batch | prefill ms | decode tok/s | vlmzoo prefill speed-up | vlmzoo decode speed-up |",
             "|---|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        helpers.hf_llava_for(config, folder)
        ours = vlmzoo.from_pretrained(folder).eval().to(device, dtype)
        models = {"vlmzoo": ours}
        for attn in ("eager", "sdpa"):
            models[f"transformers-{attn}"] = helpers.load_hf(folder, attn).to(device=device, dtype=dtype)
        for batch in (1, 8):
            x = {k: v.to(device) for k, v in helpers.inputs(ours, batch, 32).items()}
            x["pixel_values"] = x["pixel_values"].to(dtype)
            rows = {}
            with torch.inference_mode():
                for name, model in models.items():
                    if name == "vlmzoo":
                        gen = lambda n, m=model: m.generate(**x, eos_token_id=[], max_new_tokens=n)  # noqa: E731
                    else:
                        gen = lambda n, m=model: m.generate(**x, do_sample=False, eos_token_id=None,  # noqa: E731
                                                            pad_token_id=0, min_new_tokens=n, max_new_tokens=n)
                    prefill = best_ms(lambda m=model: m(**x), device, repeats=5, inner=1)
                    one = best_ms(lambda: gen(1), device, repeats=3, inner=1)
                    total = best_ms(lambda: gen(new_tokens), device, repeats=3, inner=1)
                    rows[name] = (prefill, batch * (new_tokens - 1) / max(total - one, 1e-6) * 1e3)
            for name, (prefill, tok_s) in rows.items():
                lines.append(f"| {name} | {batch} | {prefill:.2f} | {tok_s:.1f} | "
                             f"{prefill / rows['vlmzoo'][0]:.2f}x | {rows['vlmzoo'][1] / tok_s:.2f}x |")
                print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--results", default=None, help="append the tables to this markdown file")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    header = f"{name}, torch {torch.__version__} (CUDA {torch.version.cuda}), {datetime.date.today()}, commit {commit}"
    text = [f"### ops on {args.device}: vlmzoo vs torch", "", header, ""]
    text += op_table(device, dtypes, [int(b) for b in args.batches.split(",")])
    if not args.skip_e2e:
        text += ["", f"### LLaVA end to end on {args.device} ({args.preset}, {dtypes[0]}): vlmzoo vs transformers",
                 "", header, ""]
        text += end_to_end(device, dtypes[0], args.preset, args.new_tokens)
    print("\n" + "\n".join(text))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
