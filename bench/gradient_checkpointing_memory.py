"""Peak memory of one training step (forward, loss, backward) with and without gradient_checkpointing_enable(),
on a preset (default: the small LLaVA, configs/small/llava-1.5-small.json). Each mode runs in its own fresh
process; two measures:
- saved: the bytes of activations autograd keeps for backward during the forward (torch's saved-tensor
  hooks see the C++ nodes too; parameters saved by the linears are not counted), the part checkpointing
  removes;
- peak RSS growth: the process's resident-set high-water mark after the step minus before it (what the
  machine had to hold; glibc may keep freed pages, so this is an upper bound). It includes the parameters'
  gradients (4 bytes per parameter), which checkpointing does not change: at small batches they dominate.

    PYTHONPATH=python python3 bench/gradient_checkpointing_memory.py [--preset llava-1.5-small] [--batch 2]
Memory does not depend on load, but the step time printed beside it does (say "under load")."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def step(preset: str, batch: int, text: int, checkpointing: bool) -> dict:
    import torch

    import vlmzoo

    torch.manual_seed(0)
    model = vlmzoo.build(preset).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    vision, image_token = model.config["vision"], model.image_token_id
    visual = model.visual_tokens_per_image
    ids = torch.randint(3, min(image_token, 1000), (batch, text + visual))
    ids[:, 1:1 + visual] = image_token
    pixels = torch.randn(batch, vision["channels"], vision["image_size"], vision["image_size"])
    saved = 0
    weights = {p.data_ptr() for p in model.parameters()}

    def pack(t):
        nonlocal saved
        if t.data_ptr() not in weights:
            saved += t.numel() * t.element_size()
        return t

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
    loss.backward()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"saved_mib": saved / 2**20, "peak_rss_growth_mib": (after - before) / 1024, "step_s": seconds,
            "loss": loss.item(), "tokens": ids.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llava-1.5-small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text", type=int, default=64, help="text tokens per row besides the image tokens")
    parser.add_argument("--child", choices=["plain", "checkpointed"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(step(args.preset, args.batch, args.text, args.child == "checkpointed")))
        return
    results = {}
    for mode in ("plain", "checkpointed"):
        out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--batch", str(args.batch),
                              "--text", str(args.text), "--child", mode], check=True, capture_output=True, text=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    plain, ckpt = results["plain"], results["checkpointed"]
    print(f"{args.preset}, batch {args.batch} x {plain['tokens']} tokens, one training step (float32, CPU)")
    for key in ("saved_mib", "peak_rss_growth_mib", "step_s"):
        print(f"  {key:20s} plain {plain[key]:9.1f}  checkpointed {ckpt[key]:9.1f}  ratio {ckpt[key] / plain[key]:.2f}")
    print(f"  loss equal: {plain['loss'] == ckpt['loss']} ({plain['loss']:.6f})")


if __name__ == "__main__":
    main()
