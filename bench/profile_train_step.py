"""Where the float32 training step's time goes: torch.profiler over vlmzoo's step (the one
bench/train_vs_transformers.py times: forward, loss, backward, clip, AdamW, vision frozen), one
process, the same random weights and batch.

    python bench/profile_train_step.py [--case llava-1.5-tiny:32] [--threads 1] [--steps 3] [--top 25]

Prints the ops by self CPU time (markdown), then the step's time split into matmul (the GEMMs of
linear layers and attention, forward and backward), the optimizer, and the rest, with the model
FLOPs rate of the whole step against the GEMMs' own rate."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Ops whose time is matrix multiplication (our fused linear ops call MKL through them or directly).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "vlmzoo::linear", "vlmzoo::linear_backward", "vlmzoo::attention", "vlmzoo::attention_backward")
OPTIMIZER_MARK = "Optimizer.step"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="llava-1.5-tiny:32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import vlmzoo
    from llava_vs_transformers import hf_llava_for
    from train_vs_transformers import batch_for, build

    preset, batch = args.case.split(":")
    torch.set_num_threads(args.threads)
    config = vlmzoo.resolve_config(preset)
    with tempfile.TemporaryDirectory() as folder:
        hf_llava_for(config, folder)
        step, config, visual = build("vlmzoo", folder, preset)
    x = batch_for(config, int(batch), visual)
    step(x)  # warm-up: packs, allocator, optimizer state
    start = time.perf_counter()
    for _ in range(args.steps):
        step(x)
    plain_ms = (time.perf_counter() - start) / args.steps * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step(x)
    events = prof.key_averages()
    total_us = sum(e.self_cpu_time_total for e in events)
    print(f"### Profile of vlmzoo's training step: {preset}, batch {batch}, {args.threads} thread(s), "
          f"{args.steps} steps; torch {torch.__version__}\n")
    print(f"step without the profiler: {plain_ms:.0f} ms; profiled self time per step: {total_us / args.steps / 1e3:.0f} ms\n")
    print("| op | calls/step | self ms/step | share |")
    print("|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"| {e.key} | {e.count / args.steps:.0f} | {e.self_cpu_time_total / args.steps / 1e3:.1f} | "
              f"{e.self_cpu_time_total / total_us:.1%} |")
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    optimizer_us = next((e.cpu_time_total for e in events if e.key.startswith(OPTIMIZER_MARK)), 0.0)
    flops = _step_flops(config, int(batch))
    print()
    print(f"matmul ops (self): {matmul_us / total_us:.1%} of the step; optimizer (inclusive): "
          f"{optimizer_us / total_us:.1%}; the rest: {1 - (matmul_us + optimizer_us) / total_us:.1%}")
    if flops:
        print(f"model FLOPs per step {flops / 1e9:.1f} G: {flops / (plain_ms / 1e3) / 1e9:.0f} GFLOP/s over the step, "
              f"{flops / (matmul_us / args.steps / 1e6) / 1e9:.0f} GFLOP/s over the matmul ops' time")


def _step_flops(config, batch: int) -> float:
    """Training FLOPs of one step, counted as vlmzoo.train counts them (projector + LLM train)."""
    from train_vs_transformers import TEXT_TOKENS
    from vlmzoo.models.info import forward_flops
    from vlmzoo.training.train import flops_with_backward

    forward = forward_flops(config, text_tokens=TEXT_TOKENS, images=1)
    return float(flops_with_backward(forward, ("abstractor", "llm")) * batch)


if __name__ == "__main__":
    main()
