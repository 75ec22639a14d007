"""Module 1: layers and their backward passes (NumPy backend)."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.backends import get_backend
from minidistill.core import functions as F
from minidistill.core.tensor import Context
from minidistill.nn.layers import MultiHeadSelfAttention

from .conftest import rng


@pytest.mark.task1_1
@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_matches_torch(bias, torch):
    x, w = rng(0).standard_normal((2, 3, 4)), rng(1).standard_normal((5, 4))
    b = rng(2).standard_normal(5) if bias else None
    g = rng(3).standard_normal((2, 3, 5))
    ops = get_backend("numpy")
    ctx = Context(ops, (True, True, bias))
    F.Linear.forward(ctx, x, w, b)
    grads = F.Linear.backward(ctx, g)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    torch.nn.functional.linear(tx, tw, tb).backward(torch.tensor(g))
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads[1], tw.grad.numpy(), rtol=1e-10)
    if bias:
        np.testing.assert_allclose(grads[2], tb.grad.numpy(), rtol=1e-10)


@pytest.mark.task1_1
def test_linear_backward_skips_unneeded_gradients():
    ops = get_backend("numpy")
    ctx = Context(ops, (False, True))
    F.Linear.forward(ctx, np.ones((3, 2)), np.ones((4, 2)))
    grads = F.Linear.backward(ctx, np.ones((3, 4)))
    assert grads[0] is None and grads[1].shape == (4, 2)


@pytest.mark.task1_2
def test_layer_norm_backward_matches_torch(torch):
    ops = get_backend("numpy")
    x = rng(0).standard_normal((2, 3, 8)) * 3 + 1
    w, b = rng(1).standard_normal(8), rng(2).standard_normal(8)
    g = rng(3).standard_normal((2, 3, 8))
    _, mean, rstd = ops.layer_norm_forward(x, w, b, 1e-12)
    dx, dw, db = ops.layer_norm_backward(g, x, w, mean, rstd)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.layer_norm(tx, (8,), tw, tb, eps=1e-12).backward(torch.tensor(g))
    for ours, ref in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.task1_3
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_softmax_backward_matches_torch(scale, torch):
    ops = get_backend("numpy")
    x, g = rng(0).standard_normal((2, 3, 6)), rng(1).standard_normal((2, 3, 6))
    y = ops.softmax_forward(x, None, scale)
    dx = ops.softmax_backward(y, g, scale)
    tx = torch.tensor(x, requires_grad=True)
    torch.softmax(tx * scale, -1).backward(torch.tensor(g))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.task1_3
def test_softmax_backward_gives_zero_where_masked():
    ops = get_backend("numpy")
    x, g = rng(0).standard_normal((2, 5)), rng(1).standard_normal((2, 5))
    keep = np.array([[True, True, False, True, False], [False] * 5])
    dx = ops.softmax_backward(ops.softmax_forward(x, keep), g)
    assert np.all(dx[~keep] == 0)
    assert abs(dx[0].sum()) < 1e-12  # softmax is shift invariant: gradients sum to zero


@pytest.mark.task1_4
def test_attention_matches_torch_multihead_attention(torch):
    b, t, d, h = 2, 5, 8, 2
    with md.use_backend("numpy"):
        att = MultiHeadSelfAttention(d, h).to(dtype="float64")
        for lin, seed in ((att.query, 1), (att.key, 2), (att.value, 3)):
            lin.weight.data[...] = rng(seed).standard_normal((d, d))
            lin.bias.data[...] = rng(seed + 10).standard_normal(d)
        x = rng(0).standard_normal((b, t, d))
        lengths = [5, 3]
        keep = np.array([[i < n for i in range(t)] for n in lengths]).reshape(b, 1, 1, t)
        context, probs, scores, qkv = att(md.Tensor(x), keep, return_scores=True, return_qkv=True)
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.tensor(np.concatenate([att.query.weight.numpy(), att.key.weight.numpy(),
                                                              att.value.weight.numpy()])))
        ref.in_proj_bias.copy_(torch.tensor(np.concatenate([att.query.bias.numpy(), att.key.bias.numpy(),
                                                            att.value.bias.numpy()])))
        ref.out_proj.weight.copy_(torch.eye(d, dtype=torch.float64))
        ref.out_proj.bias.zero_()
        pad = torch.tensor(~keep.reshape(b, t))
        out, weights = ref(torch.tensor(x), torch.tensor(x), torch.tensor(x), key_padding_mask=pad,
                           need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(context.numpy(), out.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(probs.numpy(), weights.numpy(), rtol=1e-9, atol=1e-12)
    assert context.shape == (b, t, d) and probs.shape == (b, h, t, t)
    q = qkv[0].numpy()  # (B, H, T, d/h)
    np.testing.assert_allclose(q[:, 1], (x @ att.query.weight.numpy().T + att.query.bias.numpy())[..., 4:], rtol=1e-12)
    k = qkv[1].numpy()
    np.testing.assert_allclose(scores.numpy(), q @ np.swapaxes(k, -1, -2) / 2.0, rtol=1e-12)


@pytest.mark.task1_5
def test_gelu_backward_matches_torch(torch):
    ops = get_backend("numpy")
    x, g = rng(0).standard_normal((4, 7)) * 3, rng(1).standard_normal((4, 7))
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(tx).backward(torch.tensor(g))
    np.testing.assert_allclose(ops.gelu_backward(x, g), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
