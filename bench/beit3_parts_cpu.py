"""Where one BEiT-3-base layer's forward time goes on CPU (float32, vision-language mode: 197 vision + 32 text
tokens): each part as vlmzoo runs it against one dense op over the whole sequence (the floor at the same
FLOPs), timed by the calling thread's CPU clock (best of N), so a loaded machine inflates it little.

    PYTHONPATH=python python bench/beit3_parts_cpu.py [--batches 1,8]

Rows: the q/k/v/out projections (4 x multiway_linear 768->768) and the FFN's fc1 / fc2 as multiway_linear
(one GEMM per expert and batch element) against F.linear over [B, 229, *]; the FFN as the fused layer runs
it (per modality block: one GEMM per expert over the batch) against the multiway_linear route; GELU,
layer norms, attention (vlmzoo::attention vs SDPA) and the residual adds.
"""
import argparse
import time

import torch
import torch.nn.functional as F

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)

ops = torch.ops.vlmzoo
D, HEADS, MLP, VISION, TOKENS = 768, 12, 3072, 197, 229


def best(fn, rounds):
    fn()
    fastest = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        fastest = min(fastest, time.thread_time() - start)
    return fastest * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| batch | part | vlmzoo ms | dense floor ms | floor / vlmzoo |")
    print("| --- | --- | --- | --- | --- |")
    for batch in [int(b) for b in args.batches.split(",")]:
        rounds = 10 if batch == 1 else 4
        x, h = torch.randn(batch, TOKENS, D), torch.randn(batch, TOKENS, MLP)
        expert = [{"ln": (torch.randn(D) / 30 + 1, torch.randn(D) / 30), "w1": torch.randn(MLP, D) / 30,
                   "b1": torch.randn(MLP) / 30, "sub": (torch.randn(MLP) / 30 + 1, torch.randn(MLP) / 30),
                   "w2": torch.randn(D, MLP) / 60, "b2": torch.randn(D) / 30} for _ in range(2)]
        a, b = expert
        w, bias = torch.randn(D, D) / 30, torch.randn(D)
        q = torch.randn(batch, TOKENS, HEADS, D // HEADS).transpose(1, 2)
        allowed = torch.ones(batch, 1, 1, TOKENS, dtype=torch.bool)
        allowed[..., -8:] = False

        def ffn_routed():  # the reference route: multiway ops over the sequence, one GEMM per expert and batch row
            y = ops.multiway_layer_norm(x, VISION, *a["ln"], *b["ln"], 1e-5)
            y = ops.bias_act(ops.multiway_linear(y, VISION, a["w1"], a["b1"], b["w1"], b["b1"]), None, "gelu")
            y = ops.multiway_layer_norm(y, VISION, *a["sub"], *b["sub"], 1e-5)
            return x + ops.multiway_linear(y, VISION, a["w2"], a["b2"], b["w2"], b["b2"])

        def ffn_by_modality():  # what the fused layer runs (nn::MultiwayFfn::forward_by_modality)
            out = torch.empty_like(x)
            for p, start, stop in ((a, 0, VISION), (b, VISION, TOKENS)):
                y = ops.bias_act(F.linear(ops.layer_norm(x[:, start:stop], *p["ln"], 1e-5), p["w1"], p["b1"]),
                                 None, "gelu")
                y = F.linear(ops.layer_norm(y, *p["sub"], 1e-5), p["w2"], p["b2"])
                torch.add(x[:, start:stop], y, out=out[:, start:stop])
            return out

        def ffn_dense():
            y = F.gelu(F.linear(F.layer_norm(x, (D,), *a["ln"]), a["w1"], a["b1"]))
            return x + F.linear(F.layer_norm(y, (MLP,), *a["sub"]), a["w2"], a["b2"])

        rows = {
            "4 projections (multiway_linear 768->768)": (
                lambda: [ops.multiway_linear(x, VISION, w, bias, w, bias) for _ in range(4)],
                lambda: [F.linear(x, w, bias) for _ in range(4)]),
            "fc1 as multiway_linear": (lambda: ops.multiway_linear(x, VISION, a["w1"], a["b1"], b["w1"], b["b1"]),
                                       lambda: F.linear(x, a["w1"], a["b1"])),
            "fc2 as multiway_linear": (lambda: ops.multiway_linear(h, VISION, a["w2"], a["b2"], b["w2"], b["b2"]),
                                       lambda: F.linear(h, a["w2"], a["b2"])),
            "FFN + residual, routed (reference route)": (ffn_routed, ffn_dense),
            "FFN + residual, by modality (fused layer)": (ffn_by_modality, ffn_dense),
            "GELU [B, T, 3072]": (lambda: ops.bias_act(h, None, "gelu"), lambda: F.gelu(h)),
            "3 multiway layer norms 768": (lambda: [ops.multiway_layer_norm(x, VISION, *a["ln"], *b["ln"], 1e-5)
                                                    for _ in range(3)],
                                           lambda: [F.layer_norm(x, (D,), *a["ln"]) for _ in range(3)]),
            "attention (vlmzoo::attention vs SDPA)": (
                lambda: ops.attention(q, q, q, allowed, 0.125),
                lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=allowed, scale=0.125)),
            "2 residual adds": (lambda: [x + x for _ in range(2)], lambda: [x + x for _ in range(2)]),
        }
        with torch.inference_mode():
            torch.testing.assert_close(ffn_by_modality(), ffn_routed(), atol=1e-4, rtol=1e-4)
            for name, (ours, floor) in rows.items():
                t_ours, t_floor = best(ours, rounds), best(floor, rounds)
                print(f"| {batch} | {name} | {t_ours:.1f} | {t_floor:.1f} | {t_floor / t_ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
