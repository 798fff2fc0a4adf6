"""What quantisation costs in accuracy (issue 10): model.quantize("bf16") and model.quantize("int8") against
the same model in float32.

1. llava-1.5-small with random weights (the transformers-style init: N(0, 0.02), norms 1, biases 0;
   torch.manual_seed(0)): the logits of a prefill over image + text prompts (relative Frobenius error,
   largest absolute error against the logits' standard deviation, and how often the top-1 token of a
   position agrees), and greedy generation from --prompts text prompts for --new-tokens tokens (tokens
   equal to float32's at the same position, and continuations identical from start to end).
2. A model trained as a `vlmzoo compare` row: the default preset (compare.DEFAULT_PRESET) on shapes, the compare defaults
   (task sizes, recipe, budget, seed), evaluated on the test split in float32, then quantised.

    PYTHONPATH=python python bench/quantized_accuracy.py [--prompts 32] [--new-tokens 32] [--skip-trained]
Prints markdown tables (append them to bench/RESULTS.md with the date and commit)."""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import subprocess
import time

import torch

import vlmzoo

FORMATS = ("float32", "bf16", "int8")


def quantised(model, format: str):
    return model if format == "float32" else copy.deepcopy(model).quantize(format)


def prompts(config: dict, count: int, text_tokens: int, with_image: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    vocab = config["llm"]["vocab"]
    ids = torch.randint(5, min(vocab, 32000), (count, text_tokens), generator=g)
    ids = torch.cat([torch.ones(count, 1, dtype=torch.long), ids], 1)
    if not with_image:
        return {"input_ids": ids}
    image = torch.full((count, vlmzoo.visual_tokens_per_image(config)), config["fusion"]["image_token_id"])
    size = config["vision"]["image_size"]
    return {"input_ids": torch.cat([ids[:, :1], image, ids[:, 1:]], 1),
            "pixel_values": torch.randn(count, 3, size, size, generator=g)}


@torch.no_grad()
def small_preset(args) -> str:
    torch.manual_seed(0)
    base = vlmzoo.build("llava-1.5-small").eval()
    config = base.config
    models = {f: quantised(base, f) for f in FORMATS}
    # Prefill logits: image + 32 text tokens, a few images (all positions, so keep the batch small).
    batch = prompts(config, args.images, 32, with_image=True)
    logits = {f: m(**batch).logits for f, m in models.items()}
    reference = logits["float32"].double()
    rows = ["| format | logits rel. error (Frobenius) | max abs error / logits std | top-1 agreement (all positions) "
            "| greedy tokens equal to float32's | continuations identical |", "|---|---:|---:|---:|---:|---:|"]
    # Greedy decoding: text prompts, batched.
    text = prompts(config, args.prompts, 16, with_image=False)
    generated = {f: m.generate(**text, max_new_tokens=args.new_tokens, eos_token_id=[])[:, text["input_ids"].shape[1]:]
                 for f, m in models.items()}
    for f in FORMATS[1:]:
        ours = logits[f].double()
        rel = float((ours - reference).norm() / reference.norm())
        worst = float((ours - reference).abs().max() / reference.std())
        top1 = float((ours.argmax(-1) == reference.argmax(-1)).double().mean())
        same = generated[f] == generated["float32"]
        rows.append(f"| {f} | {rel:.2%} | {worst:.3f} | {top1:.1%} | {float(same.double().mean()):.1%} | "
                    f"{int(same.all(1).sum())}/{args.prompts} |")
    return "\n".join(rows)


def trained_tiny(args) -> str:
    from vlmzoo.study.compare import DEFAULT_BUDGET, DEFAULT_PRESET, DEFAULT_TASK_SIZES
    from vlmzoo.data import make_task
    from vlmzoo.training.recipes import DEFAULT_RECIPE
    from vlmzoo.training.rows import train_for_task

    task = make_task("shapes", seed=0, image_size=64, **DEFAULT_TASK_SIZES)
    start = time.perf_counter()
    model, result = train_for_task(DEFAULT_PRESET, task, DEFAULT_BUDGET, DEFAULT_RECIPE, seed=0, progress=False)
    minutes = (time.perf_counter() - start) / 60
    model.eval()
    rows = [f"{DEFAULT_PRESET} trained on shapes as a compare row (budget {DEFAULT_BUDGET}, recipe {DEFAULT_RECIPE}, "
            f"seed 0, {len(result.losses)} steps, {minutes:.1f} min), test split:", "",
            "| format | accuracy | per kind | answers equal to float32's |", "|---|---:|---|---:|"]
    predictions = {}
    for f in FORMATS:
        evaluation = vlmzoo.evaluate(quantised(model, f), task, "test")
        predictions[f] = [p["prediction"] for p in evaluation.predictions]
        kinds = ", ".join(f"{k} {v:.1%}" for k, v in sorted(evaluation.accuracy.items()) if k != "all")
        same = sum(a == b for a, b in zip(predictions[f], predictions["float32"])) / len(predictions[f])
        rows.append(f"| {f} | {evaluation.overall:.1%} ({evaluation.counts['all']} questions) | {kinds} | {same:.1%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--images", type=int, default=4, help="image + text prompts for the logit errors")
    parser.add_argument("--skip-trained", action="store_true")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"### quantized_accuracy.py — {datetime.date.today()} — commit {commit}\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"llava-1.5-small, random init (seed 0): prefill logits over {args.images} image + 32-token prompts; "
          f"greedy decoding of {args.prompts} 16-token text prompts x {args.new_tokens} new tokens:\n")
    print(small_preset(args))
    if not args.skip_trained:
        print()
        print(trained_tiny(args))


if __name__ == "__main__":
    main()
