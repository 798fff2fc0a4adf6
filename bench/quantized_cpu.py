"""llava-1.5-small with its linear layers in float32, bf16 storage and int8 (model.quantize), against
transformers in float32 and bfloat16 (sdpa attention), all in one process on the same weights: prefill
latency at each --batches, batch-1 greedy decode tokens/s, and the decode floor of each weight format.

Rounds are interleaved (every implementation runs once per round, one after another), each time is the
best over --rounds, so the ratios compare like with like on a busy machine; `uptime` is printed with the
table. Decode tokens/s = (new_tokens - 1) / (generate(new_tokens) - generate(1)): prefill cancels out.

Decode floor: a decode step has to read every weight of the language model once (the lm_head included;
the embedding table only a row). The floor is one plain pass over those tensors as the model holds them
(uint8 amax over their bytes, as in bench/linear_cpu.py), timed in the same rounds; "step / floor" is how
far a decode step is above it.

    PYTHONPATH=python python bench/quantized_cpu.py [--threads 2] [--rounds 3] [--no-transformers]
Targets (issue 10): bf16 prefill >= 0.95x ours float32 and >= 1.5x transformers bf16, batch-1 decode >= 1.7x;
int8 prefill >= 1.8x, batch-1 decode >= 2.5x."""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vlmzoo  # noqa: E402
from llava_vs_transformers import commit, inputs, load_hf  # noqa: E402  (the end-to-end harness)

OURS = ("ours float32", "ours bf16", "ours int8")
TARGETS = {"ours bf16": (0.95, 1.7), "ours int8": (1.8, 2.5)}  # (prefill, decode) vs ours float32


def decode_tensors(model) -> list[torch.Tensor]:
    """What one decode step reads: the language model's parameters but the embedding table."""
    return [p.detach() for n, p in model.named_parameters("llm") if "embed_tokens" not in n]


def read_floor(tensors: list[torch.Tensor]):
    views = [t.reshape(-1).view(torch.uint8) for t in tensors]
    return lambda: [v.amax() for v in views]


def best_of(samples: dict, key, seconds: float) -> None:
    samples[key] = min(samples.get(key, float("inf")), seconds)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--batches", default="1,8", help="prefill batches")
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    before = uptime()

    torch.manual_seed(0)
    base = vlmzoo.build(args.preset).eval()
    config = base.config
    impls = {"ours float32": base, "ours bf16": copy.deepcopy(base).quantize("bf16"),
             "ours int8": copy.deepcopy(base).quantize("int8")}
    dtypes = {name: torch.float32 for name in impls}
    if not args.no_transformers:
        from vlmzoo.families.export import save_llava_for_transformers

        with tempfile.TemporaryDirectory() as folder:
            save_llava_for_transformers(base, folder)
            impls["transformers float32"] = load_hf(folder, "sdpa", torch.float32)
            impls["transformers bf16"] = load_hf(folder, "sdpa", torch.bfloat16)
        dtypes.update({"transformers float32": torch.float32, "transformers bf16": torch.bfloat16})

    def generate(name, x, n):
        model = impls[name]
        if name.startswith("ours"):
            return model.generate(**x, eos_token_id=[], max_new_tokens=n)
        return model.generate(**x, do_sample=False, eos_token_id=None, pad_token_id=0, min_new_tokens=n,
                              max_new_tokens=n)

    x = {(name, b): inputs(config, b, args.text_tokens, dtypes[name]) for name in impls for b in batches}
    x1 = {name: inputs(config, 1, args.text_tokens, dtypes[name]) for name in impls}
    floors = {name: read_floor(decode_tensors(impls[name])) for name in OURS}
    step_bytes = {name: sum(t.numel() * t.element_size() for t in decode_tensors(impls[name])) for name in OURS}

    best: dict = {}
    with torch.inference_mode():
        for name in impls:  # warm-up: first calls allocate and pack scratch buffers
            impls[name](**x1[name])
            generate(name, x1[name], 2)
        for _ in range(args.rounds):
            for b in batches:
                for name in impls:
                    best_of(best, ("prefill", name, b), timed(lambda: impls[name](**x[name, b])))
            for name in impls:
                best_of(best, ("one", name), timed(lambda: generate(name, x1[name], 1)))
                best_of(best, ("all", name), timed(lambda: generate(name, x1[name], args.new_tokens)))
            for name in OURS:
                best_of(best, ("floor", name), timed(floors[name]))
    after = uptime()

    step = {name: (best["all", name] - best["one", name]) / (args.new_tokens - 1) for name in impls}
    header = ["impl"] + [f"prefill b{b} ms" for b in batches] + [f"prefill b{b} vs ours f32" for b in batches]
    header += ["decode b1 tok/s", "decode vs ours f32", "decode step ms", "weights read per step MB",
               "read floor ms", "step / floor", "weights GB/s"]
    lines = [f"### quantized_cpu.py — {datetime.date.today()} — commit {commit()}", "",
             f"`{args.preset}`, {args.text_tokens} text tokens + 1 image, {args.new_tokens} new tokens; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
             f"torch {torch.__version__}; best of {args.rounds} interleaved rounds, one process.",
             f"uptime before: `{before}`; after: `{after}`", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in impls:
        cells = [name] + [f"{best['prefill', name, b] * 1e3:.0f}" for b in batches]
        cells += [f"{best['prefill', 'ours float32', b] / best['prefill', name, b]:.2f}x" for b in batches]
        cells += [f"{1 / step[name]:.1f}", f"{step['ours float32'] / step[name]:.2f}x", f"{step[name] * 1e3:.2f}"]
        if name in OURS:
            floor = best["floor", name]
            cells += [f"{step_bytes[name] / 1e6:.0f}", f"{floor * 1e3:.2f}", f"{step[name] / floor:.2f}",
                      f"{step_bytes[name] / step[name] / 1e9:.1f}"]
        else:
            cells += ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, (prefill_target, decode_target) in TARGETS.items():
        prefill = ", ".join(f"b{b} {best['prefill', 'ours float32', b] / best['prefill', name, b]:.2f}x" for b in batches)
        decode = step["ours float32"] / step[name]
        note = f"- {name}: prefill {prefill} (target >= {prefill_target}x); decode {decode:.2f}x (target >= {decode_target}x)"
        if "transformers bf16" in impls and name == "ours bf16":
            vs = ", ".join(f"b{b} {best['prefill', 'transformers bf16', b] / best['prefill', name, b]:.2f}x"
                           for b in batches)
            note += f"; prefill vs transformers bf16 {vs} (target >= 1.5x)"
        lines.append(note)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
