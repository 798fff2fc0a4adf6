"""vlmzoo::attention_backward (the tiled CPU backward) against the ATen reference that recomputes the
probabilities (vlmzoo::attention_backward_reference), and attention's gradients end to end.

Fresh random inputs (never zeros), sizes that are not multiples of the kernel's blocks, head dims
32/64/80/128, GQA, cross attention, decode (Tq = 1), causal / padding / random masks with rows that
allow nothing, non-contiguous inputs and gradients, float32 / bfloat16 / float16, gradcheck in float64.
"""
import pytest
import torch

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)
from test_ops import DEVICE, make_mask, rand

ops = torch.ops.vlmzoo
# Gradients are compared with the float64 reference, relative to the gradient's largest entry.
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float64: 1e-10}

SHAPES = {  # B, H, Hkv, Tq, Tk, d
    "odd_prefill_gqa": (2, 4, 2, 37, 37, 64),
    "tile_plus_one": (1, 2, 1, 65, 129, 32),
    "long_odd": (1, 2, 2, 257, 257, 80),
    "cross_shorter_keys": (2, 3, 3, 130, 7, 128),
    "cross_longer_keys": (1, 4, 1, 7, 300, 64),
    "decode": (2, 8, 2, 1, 257, 64),
    "decode_one_key": (1, 2, 1, 1, 1, 32),
    "one_key": (1, 2, 2, 130, 1, 128),
}
MASKS = [None, "causal", "padding", "random_with_empty_rows"]


@pytest.fixture(autouse=True)
def seed(request):
    torch.manual_seed(hash(request.node.name) % 2**31)


def inputs(shape, dtype, layout="contiguous"):
    B, H, Hkv, Tq, Tk, d = shape
    if layout == "transposed":  # [B, T, H, d] projections viewed as [B, H, T, d]
        q = rand(B, Tq, H, d, dtype=dtype).transpose(1, 2)
        k, v = (rand(B, Tk, Hkv, d, dtype=dtype).transpose(1, 2) for _ in range(2))
    else:
        q, k, v = rand(B, H, Tq, d, dtype=dtype), rand(B, Hkv, Tk, d, dtype=dtype), rand(B, Hkv, Tk, d, dtype=dtype)
    return q, k, v


def reference_grads(grad, q, k, v, allowed, scale):
    up = [t.double() for t in (grad, q, k, v)]
    out = ops.attention_reference(*up[1:], allowed, scale)
    return ops.attention_backward_reference(up[0], *up[1:], out, allowed, scale)


def assert_grads_close(ours, reference, dtype, inputs_):
    for name, o, r, x in zip("qkv", ours, reference, inputs_):
        assert o.dtype == x.dtype and o.shape == x.shape and o.is_contiguous(), name
        assert torch.isfinite(o).all(), name
        err = (o.double() - r).abs().max().item()
        bound = TOL[dtype] * max(r.abs().max().item(), 1.0)
        assert err <= bound, f"d{name}: max error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mask", MASKS)
def test_backward_matches_reference(dtype, shape, mask):
    B, H, Hkv, Tq, Tk, d = SHAPES[shape]
    q, k, v = inputs(SHAPES[shape], dtype)
    allowed = make_mask(mask, B, Tq, Tk)
    scale = d ** -0.5
    out = ops.attention(q, k, v, allowed)
    grad = rand(*out.shape, dtype=dtype)
    ours = ops.attention_backward(grad, q, k, v, out, allowed, scale)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, scale), dtype, (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mask", [None, "causal", "random_with_empty_rows"])
def test_attention_gradients_through_autograd_match_the_reference(dtype, mask):
    shape = (2, 6, 2, 70, 70, 64)
    B, H, Hkv, Tq, Tk, d = shape
    q, k, v = (t.requires_grad_() for t in inputs(shape, dtype))
    allowed = make_mask(mask, B, Tq, Tk)
    out = ops.attention(q, k, v, allowed)
    grad = rand(*out.shape, dtype=dtype)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, d ** -0.5), dtype, (q, k, v))


def test_non_contiguous_inputs_grad_and_a_broadcast_mask():
    shape = (2, 4, 2, 45, 45, 64)
    B, H, Hkv, Tq, Tk, d = shape
    q, k, v = (t.requires_grad_() for t in inputs(shape, torch.float32, layout="transposed"))
    assert not q.is_contiguous()
    allowed = make_mask("causal", B, Tq, Tk).expand(B, H, Tq, Tk)  # strides 0 over batch and heads
    out = ops.attention(q, k, v, allowed, 0.2)
    grad = rand(B, Tq, H, d).transpose(1, 2)  # a non-contiguous incoming gradient
    ours = torch.autograd.grad(out, (q, k, v), grad)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, 0.2), torch.float32, (q, k, v))
    # A gradient broadcast from a sum (every stride 0).
    ours = torch.autograd.grad(ops.attention(q, k, v, allowed, 0.2).sum(), (q, k, v))
    assert_grads_close(ours, reference_grads(torch.ones_like(out), q, k, v, allowed, 0.2), torch.float32, (q, k, v))


def test_mask_with_a_stride_other_than_one_along_the_keys():
    shape = (1, 2, 1, 33, 40, 32)
    q, k, v = inputs(shape, torch.float32)
    allowed = (torch.rand(1, 1, 40, 33, device=DEVICE) > 0.3).transpose(-1, -2)  # key stride 33
    out = ops.attention(q, k, v, allowed)
    grad = rand(*out.shape)
    ours = ops.attention_backward(grad, q, k, v, out, allowed, 32 ** -0.5)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, 32 ** -0.5), torch.float32, (q, k, v))


def test_rows_with_nothing_allowed_get_zero_gradients_and_keys_nobody_sees_too():
    q, k, v = (t.requires_grad_() for t in inputs((1, 2, 2, 5, 8, 32), torch.float32))
    allowed = torch.zeros(1, 1, 5, 8, dtype=torch.bool, device=DEVICE)
    allowed[..., 1:, :3] = True  # query 0 sees nothing; keys 3.. are seen by nobody
    dq, dk, dv = torch.autograd.grad(ops.attention(q, k, v, allowed), (q, k, v), rand(1, 2, 5, 32))
    assert torch.equal(dq[:, :, 0], torch.zeros_like(dq[:, :, 0]))
    assert torch.equal(dk[:, :, 3:], torch.zeros_like(dk[:, :, 3:]))
    assert torch.equal(dv[:, :, 3:], torch.zeros_like(dv[:, :, 3:]))
    assert dq[:, :, 1:].abs().min() > 0 and dv[:, :, :3].abs().min() > 0


def test_nothing_allowed_anywhere_and_no_keys():
    q, k, v = inputs((1, 2, 1, 6, 9, 32), torch.float32)
    allowed = torch.zeros(1, 1, 6, 9, dtype=torch.bool, device=DEVICE)
    out = ops.attention(q, k, v, allowed)
    for g in ops.attention_backward(rand(*out.shape), q, k, v, out, allowed, 0.2):
        assert torch.equal(g, torch.zeros_like(g))
    q, k, v = inputs((1, 2, 1, 6, 0, 32), torch.float32)
    out = ops.attention(q, k, v)
    dq, dk, dv = ops.attention_backward(rand(*out.shape), q, k, v, out, None, 0.2)
    assert torch.equal(dq, torch.zeros_like(q)) and dk.shape == k.shape and dv.shape == v.shape


@pytest.mark.parametrize("mask", [None, "causal", "random_with_empty_rows"])
def test_gradcheck_float64(mask):
    B, H, Hkv, Tq, Tk, d = 1, 4, 2, 5, 7, 8
    q, k, v = (t.double().requires_grad_() for t in inputs((B, H, Hkv, Tq, Tk, d), torch.float32))
    allowed = make_mask(mask, B, Tq, Tk)
    assert torch.autograd.gradcheck(lambda q, k, v: ops.attention(q, k, v, allowed), (q, k, v))
    # The backward itself, differentiated (create_graph): the differentiable reference takes over.
    assert torch.autograd.gradgradcheck(lambda q, k, v: ops.attention(q, k, v, allowed), (q, k, v))


def test_float64_kernel_matches_the_reference_exactly_enough():
    shape = (2, 4, 2, 70, 140, 80)
    q, k, v = inputs(shape, torch.float64)
    allowed = make_mask("padding", 2, 70, 140)
    out = ops.attention(q, k, v, allowed, 0.11)
    grad = rand(*out.shape, dtype=torch.float64)
    ours = ops.attention_backward(grad, q, k, v, out, allowed, 0.11)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, 0.11), torch.float64, (q, k, v))


def test_opcheck_of_the_backward_op():
    q, k, v = inputs((2, 4, 2, 6, 9, 16), torch.float32)
    allowed = make_mask("padding", 2, 6, 9)
    out = ops.attention(q, k, v, allowed)
    torch.library.opcheck(ops.attention_backward, (rand(*out.shape), q, k, v, out, allowed, 0.25))
    torch.library.opcheck(ops.attention_backward, (rand(*out.shape), q, k, v, out, None, 0.25))


def test_backward_rejects_a_grad_of_the_wrong_shape():
    q, k, v = inputs((1, 2, 1, 6, 9, 16), torch.float32)
    with pytest.raises(RuntimeError, match="grad and out must be shaped as q"):
        ops.attention_backward(rand(1, 2, 5, 16), q, k, v, rand(1, 2, 6, 16), None, 0.25)


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_counts_split_the_keys_the_same_way(threads):
    # Few kv heads for the threads: the keys are split and the splits' dQ summed.
    shape = (1, 4, 1, 20, 700, 64)
    q, k, v = inputs(shape, torch.float32)
    allowed = make_mask("causal", 1, 20, 700)
    out = ops.attention(q, k, v, allowed)
    grad = rand(*out.shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = ops.attention_backward(grad, q, k, v, out, allowed, 0.125)
    finally:
        torch.set_num_threads(before)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, 0.125), torch.float32, (q, k, v))


@pytest.mark.parametrize("d, scale", [(24, 0.3), (160, 0.1), (64, -0.3), (64, 0.0)])
def test_other_head_dims_and_scales(d, scale):
    # Head dims off the 16-lane grid or above a tile, and scales <= 0 (the masked -inf must survive).
    q, k, v = inputs((1, 4, 2, 50, 70, d), torch.float32)
    allowed = make_mask("causal", 1, 50, 70)
    out = ops.attention(q, k, v, allowed, scale)
    grad = rand(*out.shape)
    ours = ops.attention_backward(grad, q, k, v, out, allowed, scale)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, scale), torch.float32, (q, k, v))


def test_a_mask_broadcast_along_the_keys():
    q, k, v = inputs((1, 2, 1, 40, 40, 32), torch.float32)
    allowed = (torch.rand(1, 1, 40, 1, device=DEVICE) > 0.3).expand(1, 1, 40, 40)  # key stride 0
    out = ops.attention(q, k, v, allowed)
    grad = rand(*out.shape)
    ours = ops.attention_backward(grad, q, k, v, out, allowed, 32 ** -0.5)
    assert_grads_close(ours, reference_grads(grad, q, k, v, allowed, 32 ** -0.5), torch.float32, (q, k, v))
