"""What the hookable views cost a model with no hook: f32 prefill and greedy decode of the tiny LLaVA,
through `model(...)` / `model.generate(...)` (the Python call, which checks for hooks and replacements
once per call) against the C++ assembly called directly (`model._module.forward` / `.generate`, what
the call ran before the views could be hooked), interleaved in one process. Also shown: the same with an
identity hook on every LM layer, every Linear and every norm, attention and MLP block (the Python
callbacks' cost, when one asks for them).

    python bench/hooks_overhead.py [--preset llava-1.5-tiny] [--batch 1] [--new-tokens 16] [--rounds 15]

The C++ side of the change (one test of an unset std::function per Linear, norm, attention, MLP, LM layer and slot) is
compiled into both candidates; it is a few nanoseconds per block against microseconds of work."""
from __future__ import annotations

import argparse

import torch
from timing import timeit  # bench/timing.py: what the benchmarks share

import vlmzoo
from vlmzoo.models.blocks import BlockView


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="llava-1.5-tiny")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = vlmzoo.build(args.preset).eval()
    cfg = model.config
    image = torch.full((args.batch, model.visual_tokens_per_image), model.image_token_id)
    words = torch.randint(5, min(cfg["llm"]["vocab"], 200), (args.batch, args.text))
    input_ids = torch.cat([torch.ones(args.batch, 1, dtype=torch.long), image, words], 1)
    size = cfg["vision"]["image_size"]
    pixels = torch.randn(args.batch, 3, size, size)
    eos: list[int] = []
    pad = cfg["llm"]["pad_token_id"]
    n = args.new_tokens

    def cpp_prefill():
        return model._module.forward(input_ids, pixels, None, None, None, None, None)

    def model_prefill():
        return model(input_ids=input_ids, pixel_values=pixels).logits

    def cpp_generate():
        return model._module.generate(input_ids, pixels, None, None, None, n, 0, False, 1.0, 0, 1.0, 1.0, eos, pad,
                                      0, 0, None, None)

    def model_generate():
        return model.generate(input_ids=input_ids, pixel_values=pixels, max_new_tokens=n, eos_token_id=eos)

    with torch.no_grad():
        assert torch.equal(cpp_prefill(), model_prefill())
        times = timeit({"prefill cpp": cpp_prefill, "prefill model": model_prefill,
                        "generate cpp": cpp_generate, "generate model": model_generate}, args.rounds)
        handles = [m.register_forward_hook(lambda m, a, out: out) for name, m in model.named_modules()
                   if isinstance(m, (torch.nn.Linear, BlockView))
                   or (name.startswith("llm.layers.") and name.count(".") == 2)]
        hooked = timeit({"prefill hooked": model_prefill, "generate hooked": model_generate}, max(3, args.rounds // 3))
        for h in handles:
            h.remove()
        model._blocks.sync()
        sync = timeit({"sync": model._blocks.sync}, 5, min_time=0.05)["sync"]  # what a call adds in Python
    print(f"{args.preset} float32, batch {args.batch}, {input_ids.shape[1]} prompt tokens, {n} new tokens "
          f"(best of {args.rounds} interleaved rounds; {torch.get_num_threads()} threads)")
    print("| call | C++ direct (ms) | model(...) no hooks (ms) | overhead | identity hooks everywhere (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for what in ("prefill", "generate"):
        cpp, py = times[f"{what} cpp"], times[f"{what} model"]
        print(f"| {what} | {cpp * 1e3:.2f} | {py * 1e3:.2f} | {100 * (py / cpp - 1):+.2f}% | "
              f"{hooked[f'{what} hooked'] * 1e3:.2f} ({hooked[f'{what} hooked'] / cpp:.2f}x) |")
    print(f"The hook check a call adds with no hook: {sync * 1e9:.0f} ns, {100 * sync / times['prefill cpp']:.4f}% of a "
          f"prefill.")


if __name__ == "__main__":
    main()
