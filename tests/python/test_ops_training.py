"""The ops a training step adds (torch.ops.vlmzoo.act_backward, cross_entropy, cross_entropy_backward)
and the backward paths that use them, against plain references: torch's own cross_entropy, the
`*_reference` ops differentiated by ATen's autograd. Fresh random inputs, odd sizes, non-contiguous
layouts, ignored labels, float64 gradcheck, opcheck."""
import pytest
import torch
import torch.nn.functional as F
from test_ops import ACTS, DEVICE, TOL, assert_grads_match, check_op, double, rand, rope_inputs

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)

ops = torch.ops.vlmzoo


@pytest.fixture(autouse=True)
def seed(request):
    torch.manual_seed(hash(request.node.name) % 2**31)


# ---- act_backward: the activations' gradients in one pass ------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("act", ACTS)
def test_act_backward_matches_reference(dtype, act):
    x, up = rand(3, 5, 37, dtype=dtype, layout="strided_rows"), rand(3, 5, 37, dtype=dtype, layout="transposed")
    grad, bias = rand(3, 5, 37, dtype=dtype, layout="strided_last"), rand(37, dtype=dtype)
    tol = TOL.get(dtype, dict(atol=1e-10, rtol=1e-10))
    for args in ((grad, x, bias, None, act), (grad, x, None, up, act)):
        ours, ref = ops.act_backward(*args), ops.act_backward_reference(*args)
        for o, r in zip(ours, ref):
            if r is None:
                assert o is None
                continue
            assert o.dtype == dtype and o.is_contiguous()
            torch.testing.assert_close(o.float(), r.float(), **tol)


@pytest.mark.parametrize("act", ACTS)
def test_activation_gradients_are_the_references_on_strided_inputs(act):
    # The fused ops' backward (act_backward) against ATen's autograd through the reference activation.
    gate, up = rand(2, 9, 2 * 53).chunk(2, dim=-1)  # the halves of one projection: strided rows
    assert_grads_match(ops.gated_act, ops.gated_act_reference, (gate, up, act), [0, 1])
    # (strided rows, not transposed: the helper's random projection follows each output's memory layout)
    assert_grads_match(ops.bias_act, ops.bias_act_reference, (rand(4, 3, 29, layout="strided_rows"), rand(29), act),
                       [0, 1])


def test_activation_double_backward_takes_the_differentiable_reference():
    x, up = double((rand(2, 3, 7), rand(2, 3, 7)), [0, 1])
    assert torch.autograd.gradgradcheck(lambda a, b: ops.gated_act(a, b, "silu"), (x, up))


def test_act_backward_opcheck_and_shape_errors():
    check_op(ops.act_backward, (rand(2, 5, 24), rand(2, 5, 24), None, rand(2, 5, 24), "silu"), [])
    with pytest.raises(RuntimeError, match="up has shape"):
        ops.act_backward(rand(2, 5), rand(2, 5), None, rand(2, 6), "silu")


# ---- rope's backward: rope with -sin ---------------------------------------------------------------------


@pytest.mark.parametrize("rotary", [16, 10])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_rope_gradients_without_cos_sin_gradients(rotary, layout):
    # cos / sin as models build them (halves repeated), not trained: the backward runs the rope kernel.
    args = rope_inputs(2, 6, 2, 7, 16, rotary, torch.float32, layout)
    if layout == "contiguous":  # the helper's random projection follows each output's memory layout
        assert_grads_match(ops.rope, ops.rope_reference, args, [0, 1])
    assert torch.autograd.gradcheck(ops.rope, double(args, [0, 1]))


def test_rope_gradients_with_unrepeated_sin_take_the_composite():
    q, k, cos, sin = rope_inputs(2, 4, 2, 5, 16, 8, torch.float32)
    sin = rand(*sin.shape)  # halves differ: rope with -sin would be wrong here
    assert_grads_match(ops.rope, ops.rope_reference, (q, k, cos, sin), [0, 1])


def rope_calls_in_backward(q, k, cos, sin):
    q, k = q.requires_grad_(), k.requires_grad_()
    q_out, k_out = ops.rope(q, k, cos, sin)
    with torch.profiler.profile() as prof:
        (q_out.sum() + k_out.sum()).backward()
    return [e.name for e in prof.events()].count("vlmzoo::rope")


def test_rope_backward_on_real_tensors_runs_the_rope_kernel():
    # Regression: the "is sin a real tensor" test once listed Meta among has_any's keys, which matched
    # every dense tensor, so the kernel path never ran (found by torch's debug assert in the ASan build).
    assert rope_calls_in_backward(*rope_inputs(2, 4, 2, 5, 16, 16, torch.float32)) == 1
    q, k, cos, sin = rope_inputs(2, 4, 2, 5, 16, 16, torch.float32)
    assert rope_calls_in_backward(q, k, cos, rand(*sin.shape)) == 0


# ---- cross_entropy -----------------------------------------------------------------------------------------


def labels_for(shape, vocab, ignored=0.3):
    labels = torch.randint(0, vocab, shape, device=DEVICE)
    return labels.masked_fill(torch.rand(shape, device=DEVICE) < ignored, -100)


@pytest.mark.parametrize("vocab", [1, 37, 1031])
@pytest.mark.parametrize("layout", ["contiguous", "strided_rows", "transposed"])
def test_cross_entropy_matches_torch(vocab, layout):
    logits = rand(3, 7, vocab, layout=layout) * 3
    labels = labels_for((3, 7), vocab)
    loss, lse = ops.cross_entropy(logits, labels, -100)
    expected = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100, reduction="none")
    torch.testing.assert_close(loss, expected.view(3, 7), atol=1e-5, rtol=1e-5)
    kept = labels != -100
    torch.testing.assert_close(lse[kept], torch.logsumexp(logits, -1)[kept], atol=1e-5, rtol=1e-5)
    assert (loss[~kept] == 0).all() and (lse[~kept] == 0).all()


@pytest.mark.parametrize("layout", ["contiguous", "strided_rows"])
def test_cross_entropy_gradient_matches_torch(layout):
    vocab = 517
    logits, labels = rand(4, 9, vocab, layout=layout) * 2, labels_for((4, 9), vocab)
    weights = torch.rand(4, 9, device=DEVICE) + 0.5  # a gradient that differs per row

    def grad(loss_fn):
        leaf = logits.detach().clone().requires_grad_(True)
        (loss_fn(leaf) * weights).sum().backward()
        return leaf.grad

    ours = grad(lambda x: ops.cross_entropy(x, labels, -100)[0])
    torch_ = grad(lambda x: F.cross_entropy(x.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100,
                                            reduction="none").view(4, 9))
    torch.testing.assert_close(ours, torch_, atol=1e-6, rtol=1e-5)
    assert ours.is_contiguous() and (ours[labels == -100] == 0).all()
    reference = ops.cross_entropy_backward_reference(weights, logits, labels, ops.cross_entropy(logits, labels)[1])
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_cross_entropy_bfloat16_accumulates_in_float32():
    logits, labels = rand(5, 300, dtype=torch.bfloat16), labels_for((5,), 300)
    loss, _ = ops.cross_entropy(logits, labels, -100)
    assert loss.dtype == torch.float32
    expected = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-4)


def test_cross_entropy_gradcheck_float64_and_opcheck():
    logits, labels = rand(3, 4, 11), labels_for((3, 4), 11)
    assert torch.autograd.gradcheck(lambda x: ops.cross_entropy(x, labels, -100)[0], double((logits,), [0]))
    assert torch.autograd.gradgradcheck(lambda x: ops.cross_entropy(x, labels, -100)[0], double((logits,), [0]))
    check_op(ops.cross_entropy, (logits, labels, -100), [0])
    check_op(ops.cross_entropy_backward, (rand(3, 4), logits, labels, rand(3, 4), -100), [])


def test_cross_entropy_names_bad_labels():
    logits = rand(2, 3, 10)
    with pytest.raises(ValueError, match=r"label 10 \(flat position 4\) is outside \[0, 10\)"):
        ops.cross_entropy(logits, torch.tensor([[1, 2, 3], [4, 10, -100]], device=DEVICE), -100)
    with pytest.raises(ValueError, match=r"labels have shape \[2, 2\]"):
        ops.cross_entropy(logits, torch.zeros(2, 2, dtype=torch.long, device=DEVICE), -100)
    with pytest.raises(ValueError, match="int64"):
        ops.cross_entropy(logits, torch.zeros(2, 3, dtype=torch.int32, device=DEVICE), -100)


def test_cross_entropy_on_meta_gives_shapes():
    loss, lse = ops.cross_entropy(torch.empty(2, 5, 7, device="meta"), torch.empty(2, 5, dtype=torch.long,
                                                                                 device="meta"), -100)
    assert loss.shape == lse.shape == (2, 5) and loss.dtype == torch.float32


def test_causal_lm_loss_fused_is_torchs_on_shifted_logits():
    from vlmzoo.models.model import causal_lm_loss

    logits = rand(3, 8, 45)
    labels = labels_for((3, 8), 45)
    leaves = [logits.detach().clone().requires_grad_(True) for _ in range(2)]
    fused, plain = causal_lm_loss(leaves[0], labels, fused=True), causal_lm_loss(leaves[1], labels, fused=False)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    fused.backward()
    plain.backward()
    torch.testing.assert_close(leaves[0].grad, leaves[1].grad, atol=1e-7, rtol=1e-5)
    all_ignored = torch.full((3, 8), -100, device=DEVICE)
    assert causal_lm_loss(logits, all_ignored, fused=True).isnan() and causal_lm_loss(logits, all_ignored,
                                                                                       fused=False).isnan()
