"""The packed-weight linear ops against their references and against float32 F.linear.

linear_bf16: weights stored in bfloat16 and widened to float32 in the GEMM, so it equals
F.linear(x, w.bfloat16().float()) up to float32 summation order.
linear_int8: per-channel int8 weights, per-token uint8 activations, int32 dot products. Kernel and
reference quantise with the same float32 operations, so they agree to float32 rounding; against float32
F.linear the difference is the quantisation error, bounded here.

Sizes are odd on purpose: K not a multiple of the 2- or 4-feature groups, N not a multiple of the 32- or
64-column panels, one row (decode) and more rows than one register tile (prefill).
"""
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vlmzoo._C  # (registers torch.ops.vlmzoo)
from test_ops import assert_grads_match, check_op, double, rand
from test_ops_isa import DRIVER, run_python

ops = torch.ops.vlmzoo
# (rows M, in_features K, out_features N)
SHAPES = [(1, 7, 5), (1, 130, 200), (3, 67, 33), (4, 64, 64), (5, 45, 70), (8, 768, 256), (29, 33, 97), (40, 2051, 70),
          (150, 200, 130)]
LAYOUTS = ["contiguous", "transposed", "strided_rows", "strided_last"]


@pytest.fixture(autouse=True)
def seed(request):
    torch.manual_seed(hash(request.node.name) % 2**31)


@pytest.fixture(autouse=True)
def float32_bf16_path():
    # linear_bf16's float32-arithmetic kernels; the AMX tests below switch the tiles on themselves.
    vlmzoo._C.set_bf16_amx(False)
    yield
    vlmzoo._C.set_bf16_amx(True)


def amx_on() -> bool:
    vlmzoo._C.set_bf16_amx(True)
    return vlmzoo._C.bf16_amx()


def int8_parts(w):
    return ops.quantize_linear_int8(w)


# ---- packed formats ------------------------------------------------------------------------------------


def test_bf16_packing_is_panels_of_64_columns_by_feature_pairs():
    w = rand(70, 45)
    packed = ops.pack_linear_bf16(w)
    assert packed.dtype == torch.bfloat16 and packed.shape == (2, 23, 64, 2)
    w16 = w.bfloat16()
    assert torch.equal(packed[0, 5, 39], w16[39, 10:12])  # column 39, features 10 and 11
    assert torch.equal(packed[1, 22, 5], torch.stack([w16[69, 44], torch.tensor(0, dtype=torch.bfloat16)]))
    assert packed[1, :, 6:].eq(0).all()  # columns 70..127 are padding
    assert torch.equal(ops.unpack_linear_bf16(packed, 70, 45), w16)


def test_int8_quantisation_is_per_output_channel_and_exact_on_representable_weights():
    # Rows whose values are integers times a power of two, with a largest magnitude of 127 steps.
    steps = torch.randint(-127, 128, (70, 45))
    steps[:, 3] = 127
    step = 2.0 ** -torch.randint(3, 9, (70, 1)).float()
    w = steps.float() * step
    packed, scales, col_sums = ops.quantize_linear_int8(w)
    assert packed.dtype == torch.int8 and packed.shape == (2, 12, 64, 4)
    assert scales.dtype == torch.float32 and torch.equal(scales, step[:, 0])
    assert col_sums.dtype == torch.int32 and torch.equal(col_sums, steps.sum(1).int())
    assert torch.equal(packed[1, 2, 3], steps[64 + 3, 8:12].to(torch.int8))
    assert torch.equal(ops.dequantize_linear_int8(packed, scales, 45), w)


def test_int8_quantisation_of_an_all_zero_row_gives_zeros():
    w = rand(5, 9)
    w[2] = 0
    packed, scales, col_sums = ops.quantize_linear_int8(w)
    assert scales[2] == 1 and col_sums[2] == 0
    assert ops.dequantize_linear_int8(packed, scales, 9)[2].eq(0).all()


# ---- linear_bf16 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_bf16_matches_f_linear_on_the_bf16_weights(m, k, n, with_bias):
    x, w = rand(m, k), rand(n, k)
    bias = rand(n) if with_bias else None
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), n, bias)
    assert out.shape == (m, n) and out.dtype == torch.float32 and out.is_contiguous()
    # Two float32 summation orders differ by a rounding error that grows like sqrt(k): at k = 2051 a
    # near-cancelling output once missed 1e-4 by 2.7e-5 (the AVX2 kernel against MKL, fresh inputs).
    atol = 1e-4 * max(1.0, (k / 256) ** 0.5)
    torch.testing.assert_close(out, F.linear(x, w.bfloat16().float(), bias), atol=atol, rtol=1e-4)


def test_linear_bf16_prefill_size():
    x, w, bias = rand(600, 768), rand(256, 768), rand(256)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 256, bias)
    torch.testing.assert_close(out, F.linear(x, w.bfloat16().float(), bias), atol=1e-4, rtol=1e-4)


# ---- linear_bf16 on AMX tiles (CPUs with AMX-BF16; names kept out of the forced-ISA subset below) ----


@pytest.mark.parametrize("m,k,n", [(33, 7, 5), (40, 2051, 70), (77, 45, 129), (150, 200, 130), (600, 768, 256)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_amx_bf16_many_rows_multiply_activations_rounded_to_bf16(m, k, n, with_bias):
    if not amx_on():
        pytest.skip("this CPU has no AMX-BF16 (or oneDNN does not use it)")
    x, w = rand(m, k), rand(n, k)
    bias = rand(n) if with_bias else None
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), n, bias)
    # The bf16 products are exact in float32: only the summation order differs from this reference.
    atol = 1e-4 * max(1.0, (k / 256) ** 0.5)
    torch.testing.assert_close(out, F.linear(x.bfloat16().float(), w.bfloat16().float(), bias), atol=atol, rtol=1e-4)
    # ... and the tiles really ran: the float32-arithmetic result is further away than summation order.
    exact = F.linear(x, w.bfloat16().float(), bias)
    assert (out - exact).abs().max() > 10 * atol


@pytest.mark.parametrize("layout", LAYOUTS)
def test_amx_bf16_takes_strided_rows(layout):
    if not amx_on():
        pytest.skip("this CPU has no AMX-BF16 (or oneDNN does not use it)")
    x, w = rand(3, 40, 37, layout=layout), rand(45, 37)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 45, None)
    torch.testing.assert_close(out, F.linear(x.bfloat16().float(), w.bfloat16().float()), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("m", [1, 7, 32])
def test_amx_bf16_few_rows_keep_float32_arithmetic(m):
    if not amx_on():
        pytest.skip("this CPU has no AMX-BF16 (or oneDNN does not use it)")
    x, w, bias = rand(m, 300), rand(70, 300), rand(70)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 70, bias)
    torch.testing.assert_close(out, F.linear(x, w.bfloat16().float(), bias), atol=1.2e-4, rtol=1e-4)


def test_amx_bf16_switch_off_gives_float32_arithmetic_for_many_rows():
    x, w = rand(100, 300), rand(70, 300)
    vlmzoo._C.set_bf16_amx(False)
    assert not vlmzoo._C.bf16_amx()
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 70, None)
    torch.testing.assert_close(out, F.linear(x, w.bfloat16().float()), atol=1.2e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 2, 13])
def test_linear_bf16_takes_non_contiguous_3d_input(layout, rows):
    x, w = rand(2, rows, 37, layout=layout), rand(45, 37)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 45, None)
    assert out.shape == (2, rows, 45)
    torch.testing.assert_close(out, ops.linear_bf16_reference(x, ops.pack_linear_bf16(w), 45, None),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_bf16_keeps_a_reduced_input_dtype(dtype):
    x, w, bias = rand(3, 5, 40, dtype=dtype), rand(33, 40), rand(33)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 33, bias)
    assert out.dtype == dtype
    reference = ops.linear_bf16_reference(x, ops.pack_linear_bf16(w), 33, bias)
    torch.testing.assert_close(out.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_linear_bf16_gradients_match_the_reference():
    x, packed, bias = rand(3, 7, 45), ops.pack_linear_bf16(rand(70, 45)), rand(70)
    assert_grads_match(lambda x, p, b: ops.linear_bf16(x, p, 70, b),
                       lambda x, p, b: ops.linear_bf16_reference(x, p, 70, b), (x, packed, bias), [0, 2])
    # The packed weight's own gradient, in its layout and dtype.
    leaves = [t.detach().clone().requires_grad_() for t in (x, packed, bias)]
    ours = torch.autograd.grad(ops.linear_bf16(leaves[0], leaves[1], 70, leaves[2]).square().sum(), leaves)
    leaves_ref = [t.detach().clone().requires_grad_() for t in (x, packed, bias)]
    ref = torch.autograd.grad(ops.linear_bf16_reference(*leaves_ref[:2], 70, leaves_ref[2]).square().sum(), leaves_ref)
    assert ours[1].dtype == torch.bfloat16 and ours[1].shape == packed.shape
    assert ours[1][1, :, 6:].eq(0).all()  # padding columns get no gradient
    for g, r in zip(ours, ref):
        torch.testing.assert_close(g.float(), r.float(), atol=1e-2, rtol=1e-2)


def test_linear_bf16_float32_master_weight_trains_through_the_packing():
    x, w, bias = rand(6, 33), rand(21, 33), rand(21)
    w_ours, w_ref = w.clone().requires_grad_(), w.clone().requires_grad_()
    grad_out = rand(6, 21)
    (ops.linear_bf16(x, ops.pack_linear_bf16(w_ours), 21, bias) * grad_out).sum().backward()
    (F.linear(x, w_ref.bfloat16().float(), bias) * grad_out).sum().backward()
    torch.testing.assert_close(w_ours.grad, w_ref.grad, atol=2e-2, rtol=2e-2)  # rounded to bf16 on the way


def test_linear_bf16_gradcheck_float64():
    packed = ops.pack_linear_bf16(rand(9, 11))
    assert torch.autograd.gradcheck(lambda x, b: ops.linear_bf16(x, packed, 9, b),
                                    double((rand(2, 3, 11), rand(9)), [0, 1]))


def test_linear_bf16_opcheck():
    packed = ops.pack_linear_bf16(rand(33, 20))
    check_op(ops.linear_bf16, (rand(2, 5, 20), packed, 33, rand(33)), [0, 3])
    check_op(ops.linear_bf16, (rand(1, 20), packed, 33, None), [0])


def test_linear_bf16_rejects_a_packing_of_another_shape():
    packed = ops.pack_linear_bf16(rand(33, 20))
    with pytest.raises(RuntimeError, match=r"packed_weight must be \[1, 11, 64, 2\]"):
        ops.linear_bf16(rand(4, 21), packed, 33, None)
    with pytest.raises(RuntimeError, match=r"packed_weight must be \[2, 10, 64, 2\]"):
        ops.linear_bf16(rand(4, 20), packed, 65, None)
    with pytest.raises(RuntimeError, match="packed_weight must be BFloat16"):
        ops.linear_bf16(rand(4, 20), packed.float(), 33, None)
    with pytest.raises(RuntimeError, match=r"bias must have shape \[33\]"):
        ops.linear_bf16(rand(4, 20), packed, 33, rand(32))


# ---- linear_int8 ---------------------------------------------------------------------------------------


def assert_int8_matches_reference(x, parts, bias):
    out = ops.linear_int8(x, *parts, bias)
    reference = ops.linear_int8_reference(x, *parts, bias)
    assert out.dtype == x.dtype and out.is_contiguous() and out.shape == reference.shape
    scale = reference.float().abs().max().item()
    tol = 1e-5 if x.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.float(), reference.float(), atol=tol * scale, rtol=tol)


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_int8_matches_reference(m, k, n, with_bias):
    x = rand(m, k)
    assert_int8_matches_reference(x, int8_parts(rand(n, k)), rand(n) if with_bias else None)


def test_linear_int8_prefill_size():
    assert_int8_matches_reference(rand(600, 768), int8_parts(rand(256, 768)), rand(256))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 2, 13])
def test_linear_int8_takes_non_contiguous_3d_input(layout, rows):
    assert_int8_matches_reference(rand(2, rows, 37, layout=layout), int8_parts(rand(45, 37)), rand(45))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_int8_keeps_a_reduced_input_dtype(dtype):
    assert_int8_matches_reference(rand(3, 5, 40, dtype=dtype), int8_parts(rand(33, 40)), rand(33))


def test_linear_int8_rows_of_one_sign_and_constant_rows():
    x = rand(4, 50)
    x[0] = x[0].abs() + 0.1  # all positive: zero point 0
    x[1] = -x[1].abs() - 0.1  # all negative: zero point 255
    x[2] = 0  # nothing but zeros: out = bias
    x[3] = 0.75  # constant
    parts, bias = int8_parts(rand(70, 50)), rand(70)
    assert_int8_matches_reference(x, parts, bias)
    torch.testing.assert_close(ops.linear_int8(x, *parts, bias)[2], bias)


@pytest.mark.parametrize("op", ["bf16", "int8"])
def test_linear_non_finite_rows_give_non_finite_outputs(op):
    x, w = rand(3, 50), rand(70, 50)
    x[0, 7] = float("nan")
    x[2, 3] = float("inf")
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 70, None) if op == "bf16" else \
        ops.linear_int8(x, *int8_parts(w), None)
    assert out[0].isnan().all()  # no finite garbage from a NaN
    assert out[1].isfinite().all()
    assert not out[2].isfinite().all()


@pytest.mark.parametrize("m,k,n", [(1, 768, 256), (64, 768, 2048), (64, 2048, 768)])
def test_linear_int8_is_within_quantisation_error_of_float32(m, k, n):
    # Gaussian activations and weights: each 8-bit grid adds ~0.9% noise (relative), together ~1.3%.
    x, w, bias = rand(m, k), rand(n, k) * 0.02, rand(n) * 0.02
    exact = F.linear(x, w, bias)
    error = (ops.linear_int8(x, *int8_parts(w), bias) - exact).norm() / exact.norm()
    assert 1e-3 < error < 2e-2, f"relative error {error:.4f}"


def test_linear_int8_gradients_are_straight_through():
    x, w, bias = rand(2, 5, 40), rand(33, 40), rand(33)
    parts = int8_parts(w)
    xg, bg = x.clone().requires_grad_(), bias.clone().requires_grad_()
    grad_out = rand(2, 5, 33)
    (ops.linear_int8(xg, *parts, bg) * grad_out).sum().backward()
    dequantized = ops.dequantize_linear_int8(parts[0], parts[1], 40)
    torch.testing.assert_close(xg.grad, grad_out @ dequantized, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bg.grad, grad_out.sum((0, 1)))


def test_linear_int8_refuses_trainable_scales():
    packed, scales, col_sums = int8_parts(rand(33, 40))
    with pytest.raises(RuntimeError, match="scales get no gradient"):
        ops.linear_int8(rand(3, 40), packed, scales.requires_grad_(), col_sums, None)


def test_linear_int8_opcheck():
    packed, scales, col_sums = int8_parts(rand(33, 20))
    check_op(ops.linear_int8, (rand(2, 5, 20), packed, scales, col_sums, rand(33)), [0, 4])
    check_op(ops.linear_int8, (rand(1, 20), packed, scales, col_sums, None), [0])


def test_linear_int8_rejects_mismatched_parts():
    packed, scales, col_sums = int8_parts(rand(33, 20))
    with pytest.raises(RuntimeError, match=r"packed_weight must be \[1, 6, 64, 4\]"):
        ops.linear_int8(rand(4, 21), packed, scales, col_sums, None)
    with pytest.raises(RuntimeError, match=r"col_sums must be int32 \[33\]"):
        ops.linear_int8(rand(4, 20), packed, scales, col_sums[:-1], None)
    with pytest.raises(RuntimeError, match="scales must be float32"):
        ops.linear_int8(rand(4, 20), packed, scales.double(), col_sums, None)
    with pytest.raises(RuntimeError, match="exceeds 65536"):
        ops.quantize_linear_int8(rand(2, 65537))


@pytest.mark.parametrize("op", ["bf16", "int8"])
def test_linear_with_no_rows_returns_an_empty_result(op):
    w = rand(33, 20)
    x = rand(0, 20)
    out = ops.linear_bf16(x, ops.pack_linear_bf16(w), 33, None) if op == "bf16" else \
        ops.linear_int8(x, *int8_parts(w), None)
    assert out.shape == (0, 33)


# ---- lower instruction set levels ----------------------------------------------------------------------


@pytest.mark.parametrize("isa", ["avx2", "reference"])
def test_linear_ops_match_at_a_forced_level(isa):
    # avx2: linear_bf16's AVX2 kernel, linear_int8 through the reference (no VNNI copy); reference: both.
    subset = "matches or non_contiguous or reduced_input or one_sign or quantisation_error or prefill_size"
    proc = run_python(["-c", DRIVER, str(Path(__file__)), "-q", "-p", "no:cacheprovider", "-k", subset], isa)
    output = proc.stdout + proc.stderr
    if "lacks" in output and "this CPU" in output:
        pytest.skip(f"this CPU cannot run {isa}")
    assert f"vlmzoo cpu_isa: {isa}\n" in proc.stdout, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 60 and "skipped" not in proc.stdout, output[-3000:]
