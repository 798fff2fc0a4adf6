"""One float32 training step of LLaVA, vlmzoo vs transformers, same random weights and batch:
forward, loss, backward, gradient clipping (1.0) and AdamW, the vision tower frozen as in the
compare recipe (projector + LLM train).

    python bench/train_vs_transformers.py [--cases llava-1.5-tiny:32,llava-1.5-small:4] [--threads 1,2]
                               [--baseline /path/to/another/checkout/python] [--lora]

vlmzoo runs the step `vlmzoo.train` runs (its optimizer and the model's loss); transformers runs
LlavaForConditionalGeneration (sdpa attention) with its Trainer's default optimizer on this torch
(AdamW, fused=True since torch 2.8). --baseline adds a vlmzoo loaded from another checkout
(e.g. main's python/ folder), to show before/after in the same run.

--lora: the LoRA step instead. PEFT's get_peft_model with the same LoraConfig on both sides (LORA: r 8,
alpha 16, dropout 0.05 on the LM's seven projections of every layer; vlmzoo.train(lora={})'s defaults), the LM's
weights frozen, the projector trained fully, the vision tower frozen. The adapters' B starts at zero,
so the first losses still agree.

Each implementation lives in a process of its own (the worker harness of llava_vs_transformers.py);
their steps are interleaved, one process at a time, so a slow spell of the machine hits all alike.
Time: the best of --repeats steps after one warm-up step. Peak memory: the resident high-water mark
during the steps above the resident size before them (weights and optimizer state of the earlier
thread settings included, so compare the first row of a case).
Prints a markdown table; speed-up > 1 means vlmzoo is faster."""
from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.05)
TEXT_TOKENS = 22  # about the built-in tasks' mean text length (question + answer + <bos>/<eos>)


def batch_for(config: dict, batch: int, visual_tokens: int, seed: int = 0) -> dict:
    """A training batch like the built-in tasks': <bos>, image tokens, text of random length
    right-padded; labels are the text tokens (-100 on <bos>, image and padding)."""
    g = torch.Generator().manual_seed(seed)
    size = config["vision"]["image_size"]
    image_id, vocab = config["fusion"]["image_token_id"], config["llm"]["vocab"]
    length = 1 + visual_tokens + TEXT_TOKENS
    ids = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), -100, dtype=torch.long)
    for row in range(batch):
        n = int(torch.randint(TEXT_TOKENS // 2, TEXT_TOKENS + 1, (1,), generator=g))
        text = torch.randint(5, min(1000, vocab), (n,), generator=g)
        ids[row, 0] = 1
        ids[row, 1 : 1 + visual_tokens] = image_id
        ids[row, 1 + visual_tokens : 1 + visual_tokens + n] = text
        mask[row, : 1 + visual_tokens + n] = 1
        labels[row, 1 + visual_tokens : 1 + visual_tokens + n] = text
    return dict(input_ids=ids, attention_mask=mask, labels=labels,
                pixel_values=torch.randn(batch, 3, size, size, generator=g))


def decay_groups(named_parameters, weight_decay: float = 0.0) -> list[dict]:
    # vlmzoo.train's grouping: decay matrices only.
    decay, no_decay = [], []
    for _, p in named_parameters:
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def with_lora(model, lm_prefix: str):
    """PEFT's LoRA (LORA) on the Linears named LM_PROJECTIONS under `lm_prefix`, every base weight frozen."""
    import peft

    model.requires_grad_(False)
    pattern = rf"{lm_prefix}\.layers\.\d+\..*\.({'|'.join(LM_PROJECTIONS)})"
    return peft.get_peft_model(model, peft.LoraConfig(target_modules=pattern, **LORA))


def build(impl: str, folder: str, case: str, lora: bool = False):
    """(step function, batch) for one implementation; the step returns the loss."""
    if impl.startswith("vlmzoo"):
        import importlib

        import vlmzoo

        vtrain = importlib.import_module("vlmzoo.training.train")

        model = vlmzoo.from_pretrained(folder)
        for slot in vlmzoo.models.model.SLOTS:
            model.requires_grad_(slot in ("abstractor", "llm"), slot)
        if lora:
            with_lora(model, "llm")
            model.requires_grad_(True, "abstractor")
            model.requires_grad_(False, "vision")
        groups = vtrain._param_groups(model, 0.0)
        make = getattr(vtrain, "make_optimizer", None)  # absent in checkouts before it
        optimizer = make(groups, lr=1e-3) if make else torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
        config = model.config
        visual = model.visual_tokens_per_image
        forward = lambda x: model(**x).loss  # noqa: E731
    else:
        from llava_vs_transformers import load_hf

        model = load_hf(folder, "sdpa")
        model.model.vision_tower.requires_grad_(False)
        if lora:
            model = with_lora(model, "model.language_model")
            model.base_model.model.model.multi_modal_projector.requires_grad_(True)
        optimizer = torch.optim.AdamW(decay_groups(model.named_parameters()), lr=1e-3, betas=(0.9, 0.95),
                                      fused=True)
        import vlmzoo

        config = vlmzoo.resolve_config(case)
        visual = vlmzoo.visual_tokens_per_image(config)
        forward = lambda x: model(**x).loss  # noqa: E731
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()

    def step(x):
        loss = forward(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step, config, visual


def worker(conn, impl: str, folder: str, case: str, batch: int, python_path: str | None, lora: bool = False) -> None:
    """One implementation in its own process: ("step", threads) -> (seconds, loss); ("reset_peak",) /
    ("peak",) -> MB; ("stop",)."""
    if python_path:
        sys.path.insert(0, python_path)  # before the first `import vlmzoo`
    sys.path.insert(0, HERE)
    from llava_vs_transformers import serve

    step, config, visual = build(impl, folder, case, lora)
    x = batch_for(config, batch, visual)
    conn.send("ready")

    def run(command) -> tuple[float, float]:
        torch.set_num_threads(command[1])
        start = time.perf_counter()
        loss = step(x)
        return time.perf_counter() - start, loss

    serve(conn, run)


def measure_case(case: str, batch: int, impls: dict[str, str | None], threads: list[int], repeats: int,
                 lora: bool = False) -> list[dict]:
    sys.path.insert(0, HERE)
    import vlmzoo
    from llava_vs_transformers import hf_llava_for

    config = vlmzoo.resolve_config(case)
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        hf_llava_for(config, folder)
        pipes, processes = {}, []
        for impl, path in impls.items():
            parent, child = context.Pipe()
            process = context.Process(target=worker, args=(child, impl, folder, case, batch, path, lora))
            process.start()
            pipes[impl], processes = parent, processes + [process]
        for impl in impls:
            assert pipes[impl].recv() == "ready"

        def ask(impl, *command):
            pipes[impl].send(command)
            return pipes[impl].recv()

        for n in threads:
            base = {impl: ask(impl, "reset_peak") for impl in impls}
            first = {impl: ask(impl, "step", n)[1] for impl in impls}  # warm-up; same weights: same first loss
            best = {impl: float("inf") for impl in impls}
            for _ in range(repeats):
                for impl in impls:
                    best[impl] = min(best[impl], ask(impl, "step", n)[0])
            for impl in impls:
                rows.append({"case": case, "batch": batch, "threads": n, "impl": impl, "step_s": best[impl],
                             "first_loss": first[impl], "peak_mb": ask(impl, "peak") - base[impl]})
        for impl in impls:
            pipes[impl].send(("stop",))
        for process in processes:
            process.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="llava-1.5-tiny:32,llava-1.5-small:4")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="python/ folder of another vlmzoo checkout")
    parser.add_argument("--results", default=None, help="append the table to this markdown file")
    parser.add_argument("--lora", action="store_true", help="the LoRA step: PEFT on both, same LoraConfig")
    args = parser.parse_args()
    impls: dict[str, str | None] = {"vlmzoo": None}
    if args.baseline:
        impls["vlmzoo (baseline)"] = os.path.abspath(args.baseline)
    impls["transformers"] = None
    threads = [int(t) for t in args.threads.split(",")]
    rows = []
    for item in args.cases.split(","):
        case, batch = item.split(":")
        rows += measure_case(case, int(batch), impls, threads, args.repeats, args.lora)

    from llava_vs_transformers import commit

    what = (f"LoRA training step (float32, PEFT {LORA} on the LM's {len(LM_PROJECTIONS)} projections, projector "
            "trained, LM and vision frozen)" if args.lora else "Training step (float32, forward + backward + clip + "
            "AdamW, vision frozen)")
    lines = [f"### {what}", "",
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {datetime.date.today()}, "
             f"commit {commit()}, best of {args.repeats}; load average {os.getloadavg()[0]:.1f} at the end", "",
             "| preset | batch | threads | impl | step ms | first loss | peak MB | vlmzoo speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = next(o for o in rows if o["impl"] == "vlmzoo" and o["case"] == r["case"] and o["threads"] == r["threads"])
        lines.append(f"| {r['case']} | {r['batch']} | {r['threads']} | {r['impl']} | {r['step_s'] * 1e3:.0f} | "
                     f"{r['first_loss']:.4f} | {r['peak_mb']:.0f} | {r['step_s'] / ours['step_s']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
