"""One training step of the study's models in float32 and in bf16 mixed precision (vlmzoo.train's
precision="bf16": forward and loss under torch's CPU autocast, backward, clipping, AdamW on float32 master
weights), same weights and batch, interleaved rounds in one process.

    python bench/train_precision.py [--presets llava-1.5-micro,fuyu-micro] [--batch 32] [--rounds 5]

The step is the one `vlmzoo.train` runs on the built-in `shapes` task with the family's scratch recipe
(its trainable slots). bf16 multiplies natively on AMX-BF16 tiles or AVX512-BF16 (`vdpbf16ps`); elsewhere
autocast emulates it and the ratio falls below 1. Prints a markdown table; ratio > 1 means bf16 is faster."""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import commit, cpu_model, report, timeit  # noqa: E402
from vlmzoo.data import make_task  # noqa: E402
from vlmzoo.training.precision import autocast, cpu_multiplies_bf16  # noqa: E402
from vlmzoo.training.recipes import recipe_for  # noqa: E402
from vlmzoo.training.rows import model_for_task  # noqa: E402
from vlmzoo.training.train import _batches, _param_groups, make_optimizer, trainable_slots  # noqa: E402
from vlmzoo.models.model import SLOTS  # noqa: E402

DEFAULT_PRESETS = "llava-1.5-micro,blip2-opt-micro,flamingo-micro,fuyu-micro,llava-1.5-tiny,llava-1.5-small"


def step_fn(model, batch, precision):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(_param_groups(model, 0.0), 1e-4)

    def step():
        with autocast(precision):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = make_task("shapes", seed=0, n_train=256, n_val=0, n_test=0)
    lines = [f"CPU: {cpu_model()}; bf16 native: {cpu_multiplies_bf16()}; threads {args.threads}; commit {commit()}; "
             f"batch {args.batch}; best of {args.rounds} interleaved rounds", "",
             "| preset | float32 step ms | bf16 step ms | bf16 speed-up | first-step loss f32 / bf16 |",
             "|---|---:|---:|---:|---|"]
    for preset in args.presets.split(","):
        models, losses = {}, {}
        for precision in ("float32", "bf16"):
            model = model_for_task(preset, task, None, 0, None, None)
            slots = trainable_slots(model, recipe_for(model.config, None).trainable)
            for slot in SLOTS:
                model.requires_grad_(slot in slots, slot)
            model.train()
            batch = next(_batches(task, model, args.batch, 0, 0, 0.0))
            with torch.no_grad(), autocast(precision):
                losses[precision] = float(model(**batch).loss)
            models[precision] = step_fn(model, batch, precision)
        times = timeit(models, args.rounds, min_time=0.0, warmup=1)
        lines.append(f"| {preset} | {1e3 * times['float32']:.1f} | {1e3 * times['bf16']:.1f} | "
                     f"{times['float32'] / times['bf16']:.2f}x | {losses['float32']:.4f} / {losses['bf16']:.4f} |")
        print(lines[-1], flush=True)
    report("\n".join(lines), args.results)


if __name__ == "__main__":
    main()
