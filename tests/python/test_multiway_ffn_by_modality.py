"""The fused BEiT-3 layer runs its FFN per modality block (nn::MultiwayFfn::forward_by_modality: each expert's
norm reads its token range in place, fc1 / fc2 are one GEMM per expert over the batch, the residual adds write
both ranges into one output). Against the reference path (the per-token routed composite) on fresh random
inputs, with a one-token text, a batch, without and with autograd (its backward included); and the layer norm
op it rests on, reading a token range of a sequence in place, against ATen's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlmzoo

ops = torch.ops.vlmzoo


@pytest.mark.parametrize("start,length", [(0, 9), (0, 1), (8, 1), (1, 7), (3, 0)])
def test_layer_norm_reads_a_token_range_in_place_as_aten_does(start, length):
    g = torch.Generator().manual_seed(start * 10 + length)
    x = torch.randn(3, 9, 40, generator=g)
    w, b = torch.randn(40, generator=g), torch.randn(40, generator=g)
    view = x[:, start:start + length]  # [3, length, 40], rows 9 * 40 apart between batch elements
    out = ops.layer_norm(view, w, b, 1e-5)
    assert out.is_contiguous() and out.shape == view.shape
    torch.testing.assert_close(out, F.layer_norm(view, (40,), w, b, 1e-5), atol=1e-5, rtol=1e-5)
    # a transposed [B, T, D] (unit channel stride, other strides permuted) and the backward
    leaf = torch.randn(9, 3, 40, generator=g, requires_grad=True)
    strided = leaf.transpose(0, 1)
    ours = torch.autograd.grad(ops.layer_norm(strided, w, b, 1e-5).pow(2).sum(), leaf)[0]
    theirs = torch.autograd.grad(F.layer_norm(strided, (40,), w, b, 1e-5).pow(2).sum(), leaf)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def passes(model, tokens, batch, seed):
    g = torch.Generator().manual_seed(seed)
    size = model.config["vision"]["image_size"]
    ids = torch.randint(3, model.config["llm"]["vocab"], (batch, tokens), generator=g)
    mask = torch.ones_like(ids)
    mask[0, tokens // 2 + 1:] = 0  # the first row right-padded (when it has room)
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return model(input_ids=ids, pixel_values=pixels, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("tokens,batch", [(7, 3), (1, 2), (5, 1)])
def test_the_ffn_by_modality_equals_the_reference_path_forward_and_backward(tokens, batch):
    torch.manual_seed(tokens * 10 + batch)
    model = vlmzoo.build("beit3-tiny").eval()
    model._module.initialize_weights(0.2, tokens)  # large enough weights that every expert matters
    with torch.no_grad():  # the in-place residual path
        fused = passes(model, tokens, batch, seed=tokens)
        model.fused = False
        reference = passes(model, tokens, batch, seed=tokens)
        model.fused = True
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)
    grads = []
    for fused_flag in (True, False):  # autograd: the concatenating path, its gradients against the reference's
        model.fused = fused_flag
        model.zero_grad(set_to_none=True)
        out = passes(model, tokens, batch, seed=tokens)
        torch.testing.assert_close(out.detach(), reference, atol=1e-4, rtol=1e-4)
        out.pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("ffn.B.fc1" in n for n in grads[0]) and any("ffn.A.fc2" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-3, msg=name)
