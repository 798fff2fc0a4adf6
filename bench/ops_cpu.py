"""Per-op CPU benchmark: vlmzoo's fused ops vs the unfused ATen composite vs torch's own fused op.

Shapes are those of a small LLaVA (hidden 768, 12 heads of 64, MLP 2048/3072, 576 prefill tokens,
decode over a 1024-token cache). Candidates are timed round-robin in one process, so the ratios
compare like with like even on a noisy machine. Prints a markdown table; --append adds it to
bench/RESULTS.md with the machine, torch version, date and commit.

    PYTHONPATH=python python bench/ops_cpu.py [--threads N] [--clock wall|cpu] [--isa avx2] [--append]
    PYTHONPATH=python python bench/ops_cpu.py --memory [--append]   # attention backward peak memory

On a shared machine use --threads 1 --clock cpu: the time each call spends on the CPU, unaffected by
other processes taking the core (wall-clock multi-thread timings there mostly measure OpenMP waits).
--isa avx2 measures an AVX2 machine on an AVX-512 one: vlmzoo's AVX2 kernels (VLMZOO_CPU_ISA), and
ATen, oneDNN and MKL held to AVX2 too (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS,
set here before torch loads), so the composites run as they would there.
"""
import argparse
import ctypes
import datetime
import gc
import json
import os
import subprocess
import sys

ISA_ENV = {
    "avx2": {"VLMZOO_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "reference": {"VLMZOO_CPU_ISA": "reference"},
}
if __name__ == "__main__":  # before torch loads: ATen, oneDNN and MKL read these once
    _isa = argparse.ArgumentParser(add_help=False)
    _isa.add_argument("--isa", choices=sorted(ISA_ENV))
    os.environ.update(ISA_ENV.get(_isa.parse_known_args(sys.argv[1:])[0].isa, {}))

import torch
import torch.nn.functional as F

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)
from timing import commit, cpu_model, timeit, use_thread_clock  # bench/timing.py: the harness the CPU benchmarks share

ops = torch.ops.vlmzoo
HIDDEN, HEADS, HEAD_DIM, MLP_LLM, MLP_VIT, TOKENS, CACHE = 768, 12, 64, 2048, 3072, 576, 1024
NORM_TARGET, ATTN_PREFILL_TARGET, ATTN_DECODE_TARGET = 1.5, 1.0, 1.5


def composite_layer_norm(x, w, b, eps):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    return ((x32 - mean) * torch.rsqrt(var + eps) * w.float() + b.float()).to(x.dtype)


def cases(dtype):
    """(name, shape text, target, {ours, composite, torch?})."""
    r = lambda *s: torch.randn(*s, dtype=dtype)  # noqa: E731
    x, res, w, b = r(TOKENS, HIDDEN), r(TOKENS, HIDDEN), r(HIDDEN), r(HIDDEN)
    h_vit, b_vit = r(TOKENS, MLP_VIT), r(MLP_VIT)
    gate_up = r(TOKENS, 2 * MLP_LLM)
    gate, up = gate_up.chunk(2, -1)
    q, k = r(1, HEADS, TOKENS, HEAD_DIM), r(1, HEADS, TOKENS, HEAD_DIM)
    v = r(1, HEADS, TOKENS, HEAD_DIM)
    angles = torch.rand(1, TOKENS, HEAD_DIM // 2) * 6.28
    cos, sin = torch.cat([angles, angles], -1).cos().to(dtype), torch.cat([angles, angles], -1).sin().to(dtype)
    causal = torch.ones(TOKENS, TOKENS, dtype=torch.bool).tril()[None, None]
    q1, k_cache, v_cache = r(1, HEADS, 1, HEAD_DIM), r(1, HEADS, CACHE, HEAD_DIM), r(1, HEADS, CACHE, HEAD_DIM)
    mw_a, mw_b = r(HIDDEN, HIDDEN), r(HIDDEN, HIDDEN)
    xb = r(1, TOKENS, HIDDEN)
    t = f"[{TOKENS}, {HIDDEN}]"
    # Backward: gradients of q, k, v for one upstream gradient, the forward done once beforehand.
    qg, kg, vg = (x.detach().clone().requires_grad_() for x in (q, k, v))
    grad_out = r(1, HEADS, TOKENS, HEAD_DIM)

    def backward_of(out):
        return lambda: torch.autograd.grad(out, (qg, kg, vg), grad_out, retain_graph=True)
    return [
        ("rms_norm", t, NORM_TARGET, {
            "ours": lambda: ops.rms_norm(x, w, 1e-6),
            "composite": lambda: ops.rms_norm_reference(x, w, 1e-6),
            "torch": lambda: F.rms_norm(x, (HIDDEN,), w, 1e-6)}),
        ("add_rms_norm", t, NORM_TARGET, {
            "ours": lambda: ops.add_rms_norm(x, res, w, 1e-6),
            "composite": lambda: ops.add_rms_norm_reference(x, res, w, 1e-6),
            "torch": lambda: F.rms_norm(x + res, (HIDDEN,), w, 1e-6)}),
        ("layer_norm", t, NORM_TARGET, {
            "ours": lambda: ops.layer_norm(x, w, b, 1e-5),
            "composite": lambda: composite_layer_norm(x, w, b, 1e-5),
            "torch": lambda: F.layer_norm(x, (HIDDEN,), w, b, 1e-5)}),
        ("add_layer_norm", t, NORM_TARGET, {
            "ours": lambda: ops.add_layer_norm(x, res, w, b, 1e-5),
            "composite": lambda: composite_layer_norm(x + res, w, b, 1e-5),
            "torch": lambda: F.layer_norm(x + res, (HIDDEN,), w, b, 1e-5)}),
        ("bias_act gelu_tanh", f"[{TOKENS}, {MLP_VIT}]", NORM_TARGET, {
            "ours": lambda: ops.bias_act(h_vit, b_vit, "gelu_tanh"),
            "composite": lambda: F.gelu(h_vit + b_vit, approximate="tanh")}),
        ("bias_act quick_gelu", f"[{TOKENS}, {MLP_VIT}]", NORM_TARGET, {
            "ours": lambda: ops.bias_act(h_vit, b_vit, "quick_gelu"),
            "composite": lambda: ops.bias_act_reference(h_vit, b_vit, "quick_gelu")}),
        ("bias_act relu2", f"[{TOKENS}, {MLP_VIT}]", NORM_TARGET, {
            "ours": lambda: ops.bias_act(h_vit, None, "relu2"),
            "composite": lambda: torch.relu(h_vit).square()}),
        ("swiglu (halves of one projection)", f"[{TOKENS}, {MLP_LLM}]", NORM_TARGET, {
            "ours": lambda: ops.swiglu(gate, up),
            "composite": lambda: F.silu(gate) * up}),
        ("rope q+k", f"[1, {HEADS}, {TOKENS}, {HEAD_DIM}] x2", NORM_TARGET, {
            "ours": lambda: ops.rope(q, k, cos, sin),
            "composite": lambda: ops.rope_reference(q, k, cos, sin)}),
        ("attention prefill causal", f"{HEADS}h x {TOKENS} x {HEAD_DIM}", ATTN_PREFILL_TARGET, {
            "ours": lambda: ops.attention(q, k, v, causal),
            "composite": lambda: ops.attention_reference(q, k, v, causal),
            "torch": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=causal),
            "torch is_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)}),
        ("attention prefill, no mask", f"{HEADS}h x {TOKENS} x {HEAD_DIM}", ATTN_PREFILL_TARGET, {
            "ours": lambda: ops.attention(q, k, v),
            "composite": lambda: ops.attention_reference(q, k, v),
            "torch": lambda: F.scaled_dot_product_attention(q, k, v)}),
        ("attention backward causal", f"{HEADS}h x {TOKENS} x {HEAD_DIM}", None, {
            "ours": backward_of(ops.attention(qg, kg, vg, causal)),
            "composite": backward_of(ops.attention_reference(qg, kg, vg, causal)),
            "torch": backward_of(F.scaled_dot_product_attention(qg, kg, vg, attn_mask=causal)),
            "torch is_causal": backward_of(F.scaled_dot_product_attention(qg, kg, vg, is_causal=True))}),
        ("attention backward, no mask", f"{HEADS}h x {TOKENS} x {HEAD_DIM}", None, {
            "ours": backward_of(ops.attention(qg, kg, vg)),
            "composite": backward_of(ops.attention_reference(qg, kg, vg)),
            "torch": backward_of(F.scaled_dot_product_attention(qg, kg, vg))}),
        ("attention decode, 1k cache", f"{HEADS}h x 1 x {CACHE} x {HEAD_DIM}", ATTN_DECODE_TARGET, {
            "ours": lambda: ops.attention(q1, k_cache, v_cache),
            "composite": lambda: ops.attention_reference(q1, k_cache, v_cache),
            "torch": lambda: F.scaled_dot_product_attention(q1, k_cache, v_cache),
            "cache": (k_cache, v_cache)}),
        ("multiway_linear (split 256)", f"[1, {TOKENS}, {HIDDEN}]", None, {
            "ours": lambda: ops.multiway_linear(xb, 256, mw_a, b, mw_b, b),
            "composite": lambda: ops.multiway_linear_reference(xb, 256, mw_a, b, mw_b, b)}),
    ]


def decode_floor(dtype_name, t, candidates, rounds):
    """One decode step has to read the whole K/V cache once: time that read alone (a sum over K and V,
    in the same round-robin as the attention), and say how close each attention comes to it."""
    k_cache, v_cache = candidates["cache"]
    floor = timeit({"read": lambda: (k_cache.sum(), v_cache.sum()), "ours": candidates["ours"],
                    "torch": candidates["torch"]}, rounds)
    gb = 2 * k_cache.numel() * k_cache.element_size() / 1e9
    return (f"Decode floor, {dtype_name}: reading the {gb * 1e3:.1f} MB of K and V once takes "
            f"{floor['read'] * 1e6:.0f} µs ({gb / floor['read']:.0f} GB/s); attention decode: ours "
            f"{floor['ours'] * 1e6:.0f} µs ({gb / floor['ours']:.0f} GB/s), torch "
            f"{floor['torch'] * 1e6:.0f} µs ({gb / floor['torch']:.0f} GB/s).")


class _RecomputeBackward(torch.autograd.Function):
    """ops.attention with the ATen reference backward (recomputes the [Tq, Tk] probabilities)."""

    @staticmethod
    def forward(ctx, q, k, v, allowed):
        out = ops.attention(q, k, v, allowed)
        ctx.save_for_backward(q, k, v, out)
        ctx.allowed = allowed
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out = ctx.saved_tensors
        return (*ops.attention_backward_reference(grad, q, k, v, out, ctx.allowed, q.shape[-1] ** -0.5), None)


MEMORY_CANDIDATES = {
    "ours": lambda q, k, v, m: ops.attention(q, k, v, m),
    "ATen recompute backward": lambda q, k, v, m: _RecomputeBackward.apply(q, k, v, m),
    "composite (autograd of the reference)": lambda q, k, v, m: ops.attention_reference(q, k, v, m),
    "torch SDPA": lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
}


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset VmHWM to the current RSS
        f.write("5")


def memory_child(name, dtype_name, causal):
    """Peak resident memory above the inputs of one forward + backward (and of the backward alone).

    Run in a fresh process with MALLOC_MMAP_THRESHOLD_ fixed, so every large tensor is its own mapping,
    returned on free: the resident set then follows the live tensors."""
    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    q, k, v = (torch.randn(1, HEADS, TOKENS, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, HEADS, TOKENS, HEAD_DIM, dtype=dtype)
    mask = torch.ones(TOKENS, TOKENS, dtype=torch.bool).tril()[None, None] if causal else None
    fn = MEMORY_CANDIDATES[name]
    for _ in range(2):  # warm up: kernels, thread pools, first-touch of the allocator
        torch.autograd.grad(fn(q, k, v, mask), (q, k, v), grad)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _rss("VmRSS")
    _reset_peak()
    out = fn(q, k, v, mask)
    peak_forward, after_forward = _rss("VmHWM"), _rss("VmRSS")
    _reset_peak()
    grads = torch.autograd.grad(out, (q, k, v), grad)
    peak_backward = _rss("VmHWM")
    del grads
    print(json.dumps({"total": max(peak_forward, peak_backward) - base, "backward": peak_backward - after_forward,
                      "saved": after_forward - base}))


def memory_table(dtypes):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    mib = 2.0 ** 20
    lines = ["| attention fwd + bwd | dtype | mask | peak over inputs MiB | backward peak MiB | saved by forward MiB |",
             "|---|---|---|---:|---:|---:|"]
    for dtype_name in dtypes:
        for causal in (True, False):
            for name in MEMORY_CANDIDATES:
                result = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", name, dtype_name,
                                         "causal" if causal else "none"], env=env, capture_output=True, text=True,
                                        check=True)
                m = json.loads(result.stdout.strip().splitlines()[-1])
                lines.append(f"| {name} | {dtype_name} | {'causal' if causal else 'none'} | {m['total'] / mib:.1f} | "
                             f"{m['backward'] / mib:.1f} | {m['saved'] / mib:.1f} |")
                print(lines[-1], flush=True)
    return lines


def machine():
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV),
                        help="force vlmzoo's CPU kernels to this level (avx2: ATen, oneDNN and MKL too)")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    parser.add_argument("--only", default="", help="run the rows whose name contains this text")
    parser.add_argument("--memory", action="store_true",
                        help=f"peak memory of attention forward + backward ({HEADS}h x {TOKENS} x {HEAD_DIM}) instead")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], args.memory_child[2] == "causal")
        return
    if args.memory:
        lines = memory_table(args.dtypes.split(","))
        table = (f"### ops_cpu.py --memory — {datetime.date.today()} — commit {commit()}\n\n"
                 f"Peak resident memory (VmHWM, reset before each phase) over the inputs, one thread, "
                 f"{HEADS}h x {TOKENS} x {HEAD_DIM}, large allocations as their own mappings "
                 f"(MALLOC_MMAP_THRESHOLD_=65536). q, k, v and their gradients are "
                 f"{HEADS * TOKENS * HEAD_DIM * 4 / 2 ** 20:.2f} MiB each in float32.\n\n" + "\n".join(lines) + "\n")
        print()
        print(table)
        if args.append:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "a") as f:
                f.write(table + "\n")
        return
    load_before = os.getloadavg()[0]
    if args.isa and ops.cpu_isa() != args.isa:
        parser.error(f"vlmzoo's CPU kernels run at {ops.cpu_isa()}, not {args.isa}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            parser.error("--clock cpu measures one thread: add --threads 1")
        use_thread_clock()
    torch.manual_seed(0)
    lines = [
        "| op | dtype | shape | ours µs | composite µs | torch fused µs | vs composite | vs torch | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    floor_notes = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for name, shape, target, candidates in cases(dtype):
            if args.only not in name:
                continue
            t = timeit({n: f for n, f in candidates.items() if callable(f)}, args.rounds)
            torch_names = [n for n in t if n.startswith("torch")]
            best_torch = min((t[n] for n in torch_names), default=None)
            vs_comp = t["composite"] / t["ours"]
            vs_torch = best_torch / t["ours"] if best_torch else None
            if target is None:
                goal, met = "-", "-"
            elif name.startswith("attention"):
                goal = f">= {target:g}x torch"
                met = "yes" if vs_torch >= target else "no"
            else:
                goal = f">= {target:g}x composite"
                met = "yes" if vs_comp >= target else "no"
            if name.startswith("attention decode"):
                floor_notes.append(decode_floor(dtype_name, t, candidates, args.rounds))
            torch_text = " / ".join(f"{t[n] * 1e6:.0f}" for n in torch_names) or "-"
            lines.append(
                f"| {name} | {dtype_name} | {shape} | {t['ours'] * 1e6:.0f} | {t['composite'] * 1e6:.0f} | "
                f"{torch_text} | {vs_comp:.2f}x | {f'{vs_torch:.2f}x' if vs_torch else '-'} | {goal} | {met} |")
            print(lines[-1], flush=True)
    header = (f"### ops_cpu.py — {datetime.date.today()} — commit {commit()}\n\n"
              f"Machine: {machine()}; torch {torch.__version__}; {args.clock}-clock time, best of {args.rounds} "
              f"interleaved rounds; load average before the run {load_before:.1f}; vlmzoo CPU kernels "
              f"{ops.cpu_isa()}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"
              f"{', oneDNN and MKL held to AVX2' if args.isa == 'avx2' else ''}. "
              f"`torch fused` is F.rms_norm / F.layer_norm / F.scaled_dot_product_attention "
              f"(attention: with the bool mask / with is_causal); ratios use the faster.\n\n")
    table = header + "\n".join(lines) + "\n\n" + "\n".join(floor_notes) + "\n"
    print()
    print(table)
    if args.append:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write("# Benchmark results\n\nEvery measured table, newest last.\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
