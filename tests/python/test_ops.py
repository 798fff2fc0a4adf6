"""The fused ops (torch.ops.vlmzoo.*) against their plain-ATen references (torch.ops.vlmzoo.*_reference).

Every test draws fresh random inputs (never zeros), uses odd sizes, and covers non-contiguous layouts,
float32 / bfloat16 / float16, masks, gradients against the reference's, gradcheck in float64 and opcheck.
"""
import os

import pytest
import torch

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)

ops = torch.ops.vlmzoo
# bench/gpu_check.sh runs this file again with VLMZOO_TEST_DEVICE=cuda.
DEVICE = torch.device(os.environ.get("VLMZOO_TEST_DEVICE", "cpu"))
ACTS = ["gelu", "gelu_tanh", "quick_gelu", "relu", "relu2", "silu"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# float32 must match tightly; reduced types are compared with the reference evaluated in float32.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=3e-3, rtol=3e-3),
}


@pytest.fixture(autouse=True)
def seed(request):
    torch.manual_seed(hash(request.node.name) % 2**31)


def rand(*shape, dtype=torch.float32, layout="contiguous"):
    """Random values, never zero; `layout` gives a non-contiguous view holding the same shape."""
    def fresh(*base):
        t = torch.randn(*base, device=DEVICE)
        return torch.where(t.abs() < 1e-3, torch.full_like(t, 0.5), t).to(dtype)
    if layout == "contiguous":
        return fresh(*shape)
    if layout == "transposed":  # last two dims swapped in memory
        return fresh(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    if layout == "strided_rows":  # rows of a wider tensor (like gate/up halves of one projection)
        return fresh(*shape[:-1], shape[-1] * 2 + 3)[..., 1 : shape[-1] + 1]
    if layout == "strided_last":  # every other element of the last dim
        return fresh(*shape[:-1], shape[-1] * 2)[..., ::2]
    raise ValueError(layout)


def assert_matches(ours, ref_fn, args, dtype):
    """ours (computed in dtype) against the reference on the same values, evaluated in float32."""
    up = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    ref = ref_fn(*up)
    ours = ours if isinstance(ours, (tuple, list)) else (ours,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    for o, r in zip(ours, ref):
        assert o.dtype == dtype
        assert o.is_contiguous()
        torch.testing.assert_close(o.float(), r.float(), **TOL[dtype])


def assert_grads_match(op, ref_op, args, grad_idx):
    """Gradients of a random projection of the outputs, ours against the reference's (float32)."""
    def grads(fn):
        leaves = [a.detach().clone().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) else a
                  for i, a in enumerate(args)]
        out = fn(*leaves)
        out = out if isinstance(out, (tuple, list)) else (out,)
        torch.manual_seed(1)
        loss = sum((o * torch.randn_like(o)).sum() for o in out)
        return torch.autograd.grad(loss, [leaves[i] for i in grad_idx])
    for g, r in zip(grads(op), grads(ref_op)):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_rand_layouts_are_really_not_contiguous():
    for layout in ["transposed", "strided_rows", "strided_last"]:
        assert not rand(3, 4, 5, dtype=torch.bfloat16, layout=layout).is_contiguous()


def double(args, grad_idx):
    return tuple(a.detach().double().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) and
                 a.is_floating_point() else a for i, a in enumerate(args))


def check_op(op, args, grad_idx):
    torch.library.opcheck(op, tuple(a.detach().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) and
                                    a.is_floating_point() else a for i, a in enumerate(args)))


# ---- rms_norm / add_rms_norm ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "strided_rows", "strided_last"])
def test_rms_norm_matches_reference(dtype, layout):
    x, w = rand(3, 5, 77, dtype=dtype, layout=layout), rand(77, dtype=dtype)
    assert_matches(ops.rms_norm(x, w, 1e-6), ops.rms_norm_reference, (x, w, 1e-6), dtype)


def test_rms_norm_float32_equals_the_llama_convention_exactly():
    x, w = rand(4, 768), rand(768)
    ref = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5), ref, atol=2e-6, rtol=2e-6)


def test_rms_norm_bfloat16_rounds_before_the_weight_like_the_reference():
    x, w = rand(6, 129, dtype=torch.bfloat16), rand(129, dtype=torch.bfloat16)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), ops.rms_norm_reference(x, w, 1e-6), atol=0, rtol=8e-3)


def test_rms_norm_float32_weight_on_bfloat16_input_promotes_like_the_reference():
    x, w = rand(3, 64, dtype=torch.bfloat16), rand(64)
    out = ops.rms_norm(x, w, 1e-6)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ops.rms_norm_reference(x, w, 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rms_norm_returns_sum_and_normed(dtype):
    x, res, w = rand(2, 9, 100, dtype=dtype), rand(2, 9, 100, dtype=dtype, layout="strided_rows"), rand(100, dtype=dtype)
    s, y = ops.add_rms_norm(x, res, w, 1e-6)
    assert torch.equal(s, x + res)
    torch.testing.assert_close(y.float(), ops.rms_norm_reference(s, w, 1e-6).float(), **TOL[dtype])


def test_rms_norm_gradients():
    x, res, w = rand(3, 7, 33), rand(3, 7, 33), rand(33)
    assert_grads_match(ops.rms_norm, ops.rms_norm_reference, (x, w, 1e-6), [0, 1])
    assert_grads_match(ops.add_rms_norm, ops.add_rms_norm_reference, (x, res, w, 1e-6), [0, 1, 2])
    assert torch.autograd.gradcheck(ops.rms_norm, double((x[:, :3], w, 1e-6), [0, 1]))
    assert torch.autograd.gradcheck(ops.add_rms_norm, double((x[:, :3], res[:, :3], w, 1e-6), [0, 1, 2]))


MIXED = [  # (x, residual, weight): autocast's bfloat16 branch onto a float32 residual stream, and the rest
    (torch.bfloat16, torch.float32, torch.float32),
    (torch.float32, torch.bfloat16, torch.float32),
    (torch.float16, torch.float32, torch.float32),
    (torch.bfloat16, torch.float16, torch.float32),
    (torch.bfloat16, torch.float32, torch.bfloat16),
    (torch.float32, torch.float64, torch.float32),  # a float64 sum: the reference runs
]


@pytest.mark.parametrize("types", MIXED, ids=lambda t: "-".join(str(d).split(".")[1] for d in t))
@pytest.mark.parametrize("layout", ["contiguous", "strided_rows"])
def test_add_rms_norm_mixed_dtypes_follow_the_reference(types, layout):
    # sum = x + residual in the promoted dtype; normed in the sum's dtype promoted with the weight's.
    x_type, res_type, w_type = types
    x, res = rand(3, 7, 97, dtype=x_type, layout=layout), rand(3, 7, 97, dtype=res_type)
    w = rand(97, dtype=w_type)
    s, y = ops.add_rms_norm(x, res, w, 1e-6)
    s_ref, y_ref = ops.add_rms_norm_reference(x, res, w, 1e-6)
    assert s.dtype == s_ref.dtype == torch.promote_types(x_type, res_type)
    assert y.dtype == y_ref.dtype and s.is_contiguous() and y.is_contiguous()
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("types", MIXED[:4], ids=lambda t: "-".join(str(d).split(".")[1] for d in t))
def test_add_rms_norm_mixed_dtype_gradients(types):
    x_type, res_type, w_type = types
    args = (rand(2, 5, 48, dtype=x_type), rand(2, 5, 48, dtype=res_type), rand(48, dtype=w_type), 1e-6)

    def grads(fn):
        leaves = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
        s, y = fn(*leaves)
        torch.manual_seed(1)
        loss = (s.float() * torch.randn(s.shape, device=DEVICE)).sum() + (y.float() * torch.randn(y.shape, device=DEVICE)).sum()
        return torch.autograd.grad(loss, leaves[:3])

    for g, r, a in zip(grads(ops.add_rms_norm), grads(ops.add_rms_norm_reference), args):
        assert g.dtype == r.dtype == a.dtype
        torch.testing.assert_close(g, r, **TOL[a.dtype])


def test_add_rms_norm_mixed_dtype_opcheck():
    check_op(ops.add_rms_norm, (rand(2, 5, 24, dtype=torch.bfloat16), rand(2, 5, 24), rand(24), 1e-6), [0, 1, 2])


def test_add_rms_norm_still_rejects_a_residual_of_another_shape():
    with pytest.raises(RuntimeError, match="residual has shape"):
        ops.add_rms_norm(rand(2, 8), rand(3, 8, dtype=torch.bfloat16), rand(8), 1e-6)


def test_rms_norm_opcheck():
    check_op(ops.rms_norm, (rand(2, 5, 24), rand(24), 1e-6), [0, 1])
    check_op(ops.add_rms_norm, (rand(2, 5, 24), rand(2, 5, 24), rand(24), 1e-6), [0, 1, 2])


def test_rms_norm_rejects_a_mismatched_weight():
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops.rms_norm(rand(2, 8), rand(7), 1e-6)


# ---- layer_norm / add_layer_norm / multiway_layer_norm ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "strided_rows", "transposed"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_matches_reference(dtype, layout, with_bias):
    x, w = rand(3, 11, 93, dtype=dtype, layout=layout), rand(93, dtype=dtype)
    b = rand(93, dtype=dtype) if with_bias else None
    assert_matches(ops.layer_norm(x, w, b, 1e-5), ops.layer_norm_reference, (x, w, b, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_layer_norm_returns_sum_and_normed(dtype):
    x, res, w, b = rand(2, 5, 70, dtype=dtype), rand(2, 5, 70, dtype=dtype), rand(70, dtype=dtype), rand(70, dtype=dtype)
    s, y = ops.add_layer_norm(x, res, w, b, 1e-5)
    assert torch.equal(s, x + res)
    torch.testing.assert_close(y.float(), ops.layer_norm_reference(s.float(), w.float(), b.float(), 1e-5), **TOL[dtype])


def test_layer_norm_gradients():
    x, res, w, b = rand(2, 6, 31), rand(2, 6, 31), rand(31), rand(31)
    assert_grads_match(ops.layer_norm, ops.layer_norm_reference, (x, w, b, 1e-5), [0, 1, 2])
    assert_grads_match(ops.add_layer_norm, ops.add_layer_norm_reference, (x, res, w, b, 1e-5), [0, 1, 2, 3])
    assert torch.autograd.gradcheck(ops.layer_norm, double((x[:, :3], w, b, 1e-5), [0, 1, 2]))
    assert torch.autograd.gradcheck(ops.add_layer_norm, double((x[:, :3], res[:, :3], w, b, 1e-5), [0, 1, 2, 3]))


def test_layer_norm_opcheck():
    check_op(ops.layer_norm, (rand(2, 5, 24), rand(24), rand(24), 1e-5), [0, 1, 2])
    check_op(ops.layer_norm, (rand(2, 5, 24), rand(24), None, 1e-5), [0, 1])
    check_op(ops.add_layer_norm, (rand(2, 5, 24), rand(2, 5, 24), rand(24), rand(24), 1e-5), [0, 1, 2, 3])


# ---- activations --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_act_matches_reference(dtype, act, with_bias):
    x = rand(4, 13, 131, dtype=dtype, layout="strided_rows")
    b = rand(131, dtype=dtype) if with_bias else None
    assert_matches(ops.bias_act(x, b, act), ops.bias_act_reference, (x, b, act), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_gated_act_matches_reference(dtype, act):
    fused = rand(3, 7, 2 * 97, dtype=dtype)
    gate, up = fused.chunk(2, dim=-1)  # the usual non-contiguous halves of one projection
    assert_matches(ops.gated_act(gate, up, act), ops.gated_act_reference, (gate, up, act), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_is_silu_gate_times_up(dtype):
    gate, up = rand(5, 300, dtype=dtype), rand(5, 300, dtype=dtype, layout="strided_last")
    assert_matches(ops.swiglu(gate, up), lambda g, u: torch.nn.functional.silu(g) * u, (gate, up), dtype)


@pytest.mark.parametrize("act", ACTS)
def test_activation_gradients(act):
    x, b, up = rand(3, 5, 37), rand(37), rand(3, 5, 37)
    assert_grads_match(ops.bias_act, ops.bias_act_reference, (x, b, act), [0, 1])
    assert_grads_match(ops.gated_act, ops.gated_act_reference, (x, up, act), [0, 1])
    assert torch.autograd.gradcheck(ops.bias_act, double((x, b, act), [0, 1]))
    assert torch.autograd.gradcheck(ops.gated_act, double((x, up, act), [0, 1]))


@pytest.mark.parametrize("act", ["gelu_tanh", "silu"])
def test_activation_opcheck(act):
    check_op(ops.bias_act, (rand(2, 5, 24), rand(24), act), [0, 1])
    check_op(ops.bias_act, (rand(2, 5, 24), None, act), [0])
    check_op(ops.gated_act, (rand(2, 5, 24), rand(2, 5, 24), act), [0, 1])
    check_op(ops.swiglu, (rand(2, 5, 24), rand(2, 5, 24)), [0, 1])


def test_unknown_activation_is_rejected_by_name():
    with pytest.raises(ValueError, match='unknown activation "swish"'):
        ops.bias_act(rand(2, 4), None, "swish")


# ---- rope -----------------------------------------------------------------------------------------------


def rope_inputs(B, H, Hk, T, d, r, dtype, layout="contiguous", cos_batch=None):
    q = rand(B, T, H, d, dtype=dtype).transpose(1, 2) if layout == "transposed" else rand(B, H, T, d, dtype=dtype)
    k = rand(B, Hk, T, d, dtype=dtype, layout="strided_rows" if layout != "contiguous" else "contiguous")
    angles = torch.rand(cos_batch or B, T, r // 2, device=DEVICE) * 6.28
    angles = torch.cat([angles, angles], -1)
    return q, k, angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rotary", ["full", "partial"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_rope_matches_reference(dtype, rotary, layout):
    d = 64
    args = rope_inputs(2, 6, 2, 11, d, d if rotary == "full" else 32, dtype, layout)
    assert_matches(ops.rope(*args), ops.rope_reference, args, dtype)


def test_rope_broadcasts_one_cos_over_the_batch_and_takes_odd_rotary_halves():
    args = rope_inputs(3, 4, 4, 9, 80, 26, torch.float32, cos_batch=1)
    assert_matches(ops.rope(*args), ops.rope_reference, args, torch.float32)


def test_rope_gradients():
    q, k, cos, sin = rope_inputs(2, 4, 2, 5, 16, 8, torch.float32)
    cos, sin = rand(*cos.shape), rand(*sin.shape)  # independent values so their gradients are checked too
    assert_grads_match(ops.rope, ops.rope_reference, (q, k, cos, sin), [0, 1, 2, 3])
    assert torch.autograd.gradcheck(ops.rope, double((q, k, cos, sin), [0, 1, 2, 3]))


def test_rope_opcheck():
    check_op(ops.rope, rope_inputs(2, 4, 2, 5, 16, 8, torch.float32), [0, 1])


# ---- attention ------------------------------------------------------------------------------------------


def make_mask(kind, B, Tq, Tk):
    mask = make_mask_cpu(kind, B, Tq, Tk)
    return None if mask is None else mask.to(DEVICE)


def make_mask_cpu(kind, B, Tq, Tk):
    if kind is None:
        return None
    if kind == "causal":  # queries are the last Tq positions of Tk
        return torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)[None, None]
    if kind == "padding":  # per-batch key padding, [B, 1, 1, Tk]
        lengths = torch.randint(1, Tk + 1, (B,))
        return (torch.arange(Tk)[None] < lengths[:, None])[:, None, None]
    if kind == "random_with_empty_rows":
        mask = torch.rand(B, 1, Tq, Tk) > 0.4
        mask[:, :, ::3] = False  # rows with nothing to attend to must give zeros
        return mask
    raise ValueError(kind)


ATTENTION_SHAPES = {  # B, H, Hkv, Tq, Tk, d
    "prefill_gqa": (2, 4, 2, 37, 37, 64),
    "long_prefill": (1, 2, 1, 150, 150, 128),
    "several_key_blocks": (1, 2, 2, 70, 1100, 32),
    "cross": (2, 3, 3, 9, 23, 80),
    "decode_long_cache": (2, 4, 2, 1, 1029, 64),
    "decode_split_keys": (1, 2, 1, 1, 1500, 96),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(ATTENTION_SHAPES))
@pytest.mark.parametrize("mask", [None, "causal", "padding", "random_with_empty_rows"])
def test_attention_matches_reference(dtype, shape, mask):
    B, H, Hkv, Tq, Tk, d = ATTENTION_SHAPES[shape]
    q, k, v = rand(B, H, Tq, d, dtype=dtype), rand(B, Hkv, Tk, d, dtype=dtype), rand(B, Hkv, Tk, d, dtype=dtype)
    allowed = make_mask(mask, B, Tq, Tk)
    assert_matches(ops.attention(q, k, v, allowed), ops.attention_reference, (q, k, v, allowed), dtype)


def test_attention_reads_transposed_projections_without_copies_and_takes_a_scale():
    B, H, T, d = 2, 4, 19, 64
    q, k, v = (rand(B, T, H, d).transpose(1, 2) for _ in range(3))  # [B, T, H, d] viewed as [B, H, T, d]
    allowed = make_mask("causal", B, T, T)
    out = ops.attention(q, k, v, allowed, 0.3)
    torch.testing.assert_close(out, ops.attention_reference(q, k, v, allowed, 0.3), **TOL[torch.float32])


def test_attention_rows_with_nothing_to_attend_are_zero():
    q, k, v = rand(1, 2, 5, 32), rand(1, 2, 8, 32), rand(1, 2, 8, 32)
    allowed = torch.zeros(1, 1, 5, 8, dtype=torch.bool, device=DEVICE)
    allowed[..., 1:, :3] = True
    out = ops.attention(q, k, v, allowed)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))
    assert out[:, :, 1:].abs().min() >= 0 and torch.isfinite(out).all()


def test_attention_matches_torch_sdpa():
    q, k, v = rand(2, 4, 33, 64), rand(2, 4, 33, 64), rand(2, 4, 33, 64)
    ours = ops.attention(q, k, v, make_mask("causal", 2, 33, 33))
    torch.testing.assert_close(ours, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask", [None, "random_with_empty_rows"])
def test_attention_gradients(mask):
    B, H, Hkv, Tq, Tk, d = 2, 4, 2, 6, 9, 16
    q, k, v = rand(B, H, Tq, d), rand(B, Hkv, Tk, d), rand(B, Hkv, Tk, d)
    allowed = make_mask(mask, B, Tq, Tk)
    assert_grads_match(ops.attention, ops.attention_reference, (q, k, v, allowed), [0, 1, 2])
    assert torch.autograd.gradcheck(ops.attention, double((q, k, v, allowed), [0, 1, 2]))


def test_attention_opcheck():
    B, H, Hkv, Tq, Tk, d = 2, 4, 2, 6, 9, 16
    check_op(ops.attention, (rand(B, H, Tq, d), rand(B, Hkv, Tk, d), rand(B, Hkv, Tk, d),
                             make_mask("padding", B, Tq, Tk), 0.25), [0, 1, 2])
    check_op(ops.attention, (rand(B, H, 1, d), rand(B, Hkv, Tk, d), rand(B, Hkv, Tk, d)), [0, 1, 2])


def test_attention_rejects_heads_that_do_not_group():
    with pytest.raises(RuntimeError, match="kv heads 3 must divide query heads 4"):
        ops.attention(rand(1, 4, 2, 8), rand(1, 3, 2, 8), rand(1, 3, 2, 8))


# ---- multiway -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [0, 5, 17])
@pytest.mark.parametrize("with_bias", [True, False])
def test_multiway_linear_matches_reference(split, with_bias):
    x = rand(3, 17, 24, layout="strided_rows")
    wa, wb = rand(40, 24), rand(40, 24)
    ba, bb = (rand(40), rand(40)) if with_bias else (None, None)
    args = (x, split, wa, ba, wb, bb)
    torch.testing.assert_close(ops.multiway_linear(*args), ops.multiway_linear_reference(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("split", [0, 4, 11])
def test_multiway_layer_norm_matches_reference(dtype, split):
    x = rand(2, 11, 45, dtype=dtype)
    args = (x, split, rand(45, dtype=dtype), rand(45, dtype=dtype), rand(45, dtype=dtype), None, 1e-5)
    assert_matches(ops.multiway_layer_norm(*args), ops.multiway_layer_norm_reference, args, dtype)


def test_multiway_gradients():
    x = rand(2, 7, 12)
    lin = (x, 3, rand(10, 12), rand(10), rand(10, 12), None)
    ln = (x, 3, rand(12), rand(12), rand(12), rand(12), 1e-5)
    assert_grads_match(ops.multiway_linear, ops.multiway_linear_reference, lin, [0, 2, 3, 4])
    assert_grads_match(ops.multiway_layer_norm, ops.multiway_layer_norm_reference, ln, [0, 2, 3, 4, 5])
    assert torch.autograd.gradcheck(ops.multiway_linear, double(lin, [0, 2, 3, 4]))
    assert torch.autograd.gradcheck(ops.multiway_layer_norm, double(ln, [0, 2, 3, 4, 5]))


def test_multiway_opcheck():
    x = rand(2, 7, 12)
    check_op(ops.multiway_linear, (x, 3, rand(10, 12), rand(10), rand(10, 12), None), [0, 2, 3, 4])
    check_op(ops.multiway_layer_norm, (x, 3, rand(12), rand(12), rand(12), None, 1e-5), [0, 2, 3, 4])


@pytest.mark.parametrize("head_dim", [16, 24, 48, 80, 160])
@pytest.mark.parametrize("queries", [1, 7, 200])
def test_attention_bfloat16_takes_head_dims_the_packed_gemm_cannot(head_dim, queries):
    # The bf16 GEMM path (oneDNN brgemm) packs only some shapes; the others must still be right.
    q = rand(2, 4, queries, head_dim, dtype=torch.bfloat16)
    k, v = rand(2, 2, 300, head_dim, dtype=torch.bfloat16), rand(2, 2, 300, head_dim, dtype=torch.bfloat16)
    ours = torch.ops.vlmzoo.attention(q, k, v, None, None)
    reference = torch.ops.vlmzoo.attention_reference(q, k, v, None, None)
    torch.testing.assert_close(ours.float(), reference.float(), atol=1e-2, rtol=1e-2)
