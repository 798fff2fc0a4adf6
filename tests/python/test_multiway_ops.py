"""The multiway ops BEiT-3's layers route with (vlmzoo::multiway_linear, multiway_layer_norm) against
the per-modality composite they replace (each expert on its token range, then concatenated), on
the odd splits: none, all, one token, all but one; with gradcheck and opcheck on those splits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlmzoo._C  # noqa: F401  (registers torch.ops.vlmzoo)

ops = torch.ops.vlmzoo
TOKENS = 9
SPLITS = [0, TOKENS, 1, TOKENS - 1, 4]


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g).to(dtype)


def composite_linear(x, split, wa, ba, wb, bb):
    return torch.cat([F.linear(x[:, :split], wa, ba), F.linear(x[:, split:], wb, bb)], 1)


def composite_layer_norm(x, split, wa, ba, wb, bb, eps):
    d = x.size(-1)
    return torch.cat([F.layer_norm(x[:, :split], (d,), wa, ba, eps), F.layer_norm(x[:, split:], (d,), wb, bb, eps)], 1)


def linear_args(split, bias=True):
    return (rand(3, TOKENS, 24), split, rand(40, 24, seed=1), rand(40, seed=2) if bias else None,
            rand(40, 24, seed=3), rand(40, seed=4) if bias else None)


def norm_args(split):
    return (rand(3, TOKENS, 33), split, rand(33, seed=1), rand(33, seed=2), rand(33, seed=3), rand(33, seed=4), 1e-5)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("bias", [True, False])
def test_multiway_linear_equals_the_per_modality_composite(split, bias):
    args = linear_args(split, bias)
    torch.testing.assert_close(ops.multiway_linear(*args), composite_linear(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split", SPLITS)
def test_multiway_layer_norm_equals_the_per_modality_composite(split):
    args = norm_args(split)
    torch.testing.assert_close(ops.multiway_layer_norm(*args), composite_layer_norm(*args), atol=1e-5, rtol=1e-5)


def test_multiway_linear_reads_the_experts_token_ranges_of_a_strided_input():
    """x a view into a wider buffer (as an attention output reshaped): no copy is needed to be right."""
    wide = rand(3, TOKENS, 48)
    x = wide[..., :24]
    assert not x.is_contiguous()
    args = (x, 4, rand(40, 24, seed=1), rand(40, seed=2), rand(40, 24, seed=3), None)
    torch.testing.assert_close(ops.multiway_linear(*args), composite_linear(*args), atol=1e-5, rtol=1e-5)


def _double(args, grad_idx):
    return tuple(a.detach().double().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) else a
                 for i, a in enumerate(args))


@pytest.mark.parametrize("split", [0, 5, 1, 4])
def test_multiway_gradcheck_on_odd_splits(split):
    # small shapes: gradcheck perturbs every input element
    lin = (rand(2, 5, 6), split, rand(4, 6, seed=1), rand(4, seed=2), rand(4, 6, seed=3), rand(4, seed=4))
    ln = (rand(2, 5, 6), split, rand(6, seed=1), rand(6, seed=2), rand(6, seed=3), rand(6, seed=4), 1e-5)
    assert torch.autograd.gradcheck(ops.multiway_linear, _double(lin, [0, 2, 3, 4, 5]))
    assert torch.autograd.gradcheck(ops.multiway_layer_norm, _double(ln, [0, 2, 3, 4, 5]))


@pytest.mark.parametrize("split", [0, TOKENS, 1])
def test_multiway_opcheck_on_odd_splits(split):
    def leaves(args, grad_idx):
        return tuple(a.detach().requires_grad_(i in grad_idx) if isinstance(a, torch.Tensor) else a
                     for i, a in enumerate(args))
    torch.library.opcheck(ops.multiway_linear, leaves(linear_args(split), [0, 2, 3, 4, 5]))
    torch.library.opcheck(ops.multiway_layer_norm, leaves(norm_args(split), [0, 2, 3, 4, 5]))


@pytest.mark.parametrize("split", [-1, TOKENS + 1])
def test_a_split_outside_the_tokens_is_a_clear_error(split):
    with pytest.raises(RuntimeError, match=rf"split {split} must lie in \[0, tokens = {TOKENS}\]"):
        ops.multiway_linear(*linear_args(split))
