"""BEiT-3-base-shaped encoder forward on CPU: vlmzoo's multiway encoder vs torchscale 0.3.0's BEiT3
(multiway on), random weights loaded into both from one torchscale state dict, the same inputs,
vision-language mode (224 px / patch 16: 197 vision tokens, then 32 text tokens, the last 8 padding),
float32 and bfloat16, batch 1 and 8. Candidates run round-robin in one process, so the printed ratio
compares like with like on a loaded machine. Also times vlmzoo::multiway_linear against one dense
linear over the whole sequence (the routing's cost) and against the per-modality composite.

    PYTHONPATH=python python bench/beit3_cpu.py [--rounds 3] [--threads N] [--layers 12] [--clock wall|cpu]

On a shared machine use --threads 1 --clock cpu: the CPU time of the calling thread, which other
processes taking the cores do not inflate (wall-clock timings under load mostly measure waiting).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vlmzoo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
from beit3_fixtures import Beit3Task  # noqa: E402  (torchscale with the timm / fairscale stand-ins)

BASE = dict(encoder_embed_dim=768, encoder_attention_heads=12, encoder_ffn_embed_dim=3072, vocab_size=64010,
            img_size=224, patch_size=16, max_source_positions=1024)


CLOCK = time.perf_counter


def best_of(candidates, rounds):
    """Seconds per call of each candidate: the best of `rounds` interleaved rounds."""
    for fn in candidates.values():
        fn()
    times = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = CLOCK()
            fn()
            times[name] = min(times[name], CLOCK() - start)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu measures the calling thread: use it with --threads 1")
        CLOCK = time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = Beit3Task(None, encoder_layers=args.layers, **BASE).eval()
    folder = Path(tempfile.mkdtemp())
    reference.save(folder)
    ours = vlmzoo.from_pretrained(folder).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; BEiT-3 base shapes, {args.layers} layers, "
          f"vision-language mode, best of {args.rounds} interleaved rounds, {args.clock} clock")
    print("| dtype | batch | torchscale ms | vlmzoo ms | speed-up | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.bfloat16):
        ref_model = reference.to(dtype)
        model = vlmzoo.from_pretrained(folder, dtype=dtype).eval() if dtype != torch.float32 else ours
        for batch in [int(b) for b in args.batches.split(",")]:
            g = torch.Generator().manual_seed(batch)
            ids = torch.randint(3, 64010, (batch, 32), generator=g)
            mask = torch.ones_like(ids)
            mask[:, -8:] = 0
            pixels = torch.randn(batch, 3, 224, 224, generator=g).to(dtype)
            with torch.inference_mode():
                a = ref_model.hidden(ids, pixels, mask)
                b = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).last_hidden_state
                diff = (a.float() - b.float()).abs().max().item()
                t = best_of({"torchscale": lambda: ref_model.hidden(ids, pixels, mask),
                             "vlmzoo": lambda: model(input_ids=ids, pixel_values=pixels, attention_mask=mask)},
                            args.rounds)
            print(f"| {str(dtype).split('.')[-1]} | {batch} | {t['torchscale'] * 1e3:.1f} | {t['vlmzoo'] * 1e3:.1f} | "
                  f"{t['torchscale'] / t['vlmzoo']:.2f}x | {diff:.1e} |", flush=True)
    ops = torch.ops.vlmzoo
    print("\nmultiway_linear [batch, 229, 768] x [768, 768], split 197 (ms; ratio = dense / multiway)")
    print("| dtype | batch | dense linear | multiway_linear | per-modality composite | dense / multiway |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.bfloat16):
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 229, 768).to(dtype)
            wa, wb, bias = (torch.randn(768, 768).to(dtype), torch.randn(768, 768).to(dtype),
                            torch.randn(768).to(dtype))
            with torch.inference_mode():
                t = best_of({"dense": lambda: F.linear(x, wa, bias),
                             "multiway": lambda: ops.multiway_linear(x, 197, wa, bias, wb, bias),
                             "composite": lambda: torch.cat([F.linear(x[:, :197], wa, bias),
                                                             F.linear(x[:, 197:], wb, bias)], 1)},
                            max(args.rounds, 20))
            print(f"| {str(dtype).split('.')[-1]} | {batch} | {t['dense'] * 1e3:.2f} | {t['multiway'] * 1e3:.2f} | "
                  f"{t['composite'] * 1e3:.2f} | {t['dense'] / t['multiway']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
