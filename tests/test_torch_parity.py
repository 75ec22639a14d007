"""Forward and gradient parity with torch autograd for every op torch has (one line each,
as tinygrad's ``helper_test_op``). Runs our ops on every backend against torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.core import functions as F

from .conftest import rand

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch


def helper(shapes, ours, theirs, backend, positive=(), atol=1e-10):
    """Compare ``ours(*Tensors)`` with ``theirs(*torch tensors)``: values and input grads."""
    arrays = [rand(s, seed=i + 1) for i, s in enumerate(shapes)]
    arrays = [np.abs(a) + 0.5 if i in positive else a for i, a in enumerate(arrays)]
    mine = [md.Tensor(a, requires_grad=True) for a in arrays]
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = ours(*mine), theirs(*ref)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=atol, rtol=1e-9)
    w = rand(tuple(expected.shape), seed=99)
    out.backward(backend.asarray(w))
    (expected * torch.tensor(w)).sum().backward()
    for m, r in zip(mine, ref):
        np.testing.assert_allclose(backend.to_numpy(m.grad), r.grad.numpy(), atol=atol, rtol=1e-8)


def test_arithmetic(backend):
    helper([(3, 4), (4,)], lambda a, b: a + b, lambda a, b: a + b, backend)
    helper([(3, 4), (3, 1)], lambda a, b: a - b, lambda a, b: a - b, backend)
    helper([(3, 4), (1, 4)], lambda a, b: a * b, lambda a, b: a * b, backend)
    helper([(3, 4), (4,)], lambda a, b: a / b, lambda a, b: a / b, backend, positive=(1,))
    helper([(3, 4)], lambda a: a ** 3.0, lambda a: a ** 3.0, backend)
    helper([(3, 4)], lambda a: -a, lambda a: -a, backend)


def test_unary(backend):
    helper([(3, 4)], F.exp, torch.exp, backend)
    helper([(3, 4)], F.log, torch.log, backend, positive=(0,))
    helper([(3, 4)], F.sqrt, torch.sqrt, backend, positive=(0,))
    helper([(3, 4)], F.tanh, torch.tanh, backend)
    helper([(3, 4)], F.sigmoid, torch.sigmoid, backend)
    helper([(3, 4)], F.relu, torch.relu, backend)
    helper([(3, 40)], F.gelu, TF.gelu, backend, atol=1e-12)


def test_matmul_and_linear(backend):
    helper([(2, 3, 4), (4, 5)], F.matmul, torch.matmul, backend)
    helper([(2, 1, 3, 4), (5, 4, 2)], F.matmul, torch.matmul, backend)
    helper([(4,), (4, 5)], F.matmul, torch.matmul, backend)
    helper([(2, 3, 4), (4,)], F.matmul, torch.matmul, backend)
    helper([(2, 3, 4), (5, 4), (5,)], F.linear, TF.linear, backend)


def test_shapes(backend):
    helper([(2, 3, 4)], lambda x: x.reshape(6, 4), lambda x: x.reshape(6, 4), backend)
    helper([(2, 3, 4)], lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1), backend)
    helper([(2, 3, 4)], lambda x: x.transpose(0, 1), lambda x: x.transpose(0, 1), backend)
    helper([(2, 3, 4)], lambda x: x[:, 1:, ::2], lambda x: x[:, 1:, ::2], backend)
    helper([(5, 3)], lambda x: x[np.array([0, 4, 4])], lambda x: x[torch.tensor([0, 4, 4])], backend)
    helper([(2, 3), (2, 2)], lambda a, b: F.concat([a, b], axis=1), lambda a, b: torch.cat([a, b], 1), backend)


def test_reductions(backend):
    helper([(3, 4, 5)], lambda x: x.sum(axis=(0, 2)), lambda x: x.sum(dim=(0, 2)), backend)
    helper([(3, 4, 5)], lambda x: x.mean(axis=1, keepdims=True), lambda x: x.mean(dim=1, keepdim=True), backend)
    helper([(3, 4, 5)], lambda x: x.max(axis=-1), lambda x: x.amax(dim=-1), backend)


def test_normalisers(backend):
    helper([(2, 3, 7)], lambda x: F.softmax(x), lambda x: torch.softmax(x, -1), backend)
    helper([(2, 3, 7)], lambda x: F.softmax(x, axis=0), lambda x: torch.softmax(x, 0), backend)
    helper([(2, 3, 7)], lambda x: F.log_softmax(x), lambda x: torch.log_softmax(x, -1), backend)
    mask = np.ones((2, 1, 7), dtype=bool)
    mask[1, :, 4:] = False
    tmask = torch.tensor(mask)
    helper([(2, 3, 7)], lambda x: F.softmax(x, mask=mask),
           lambda x: torch.softmax(x.masked_fill(~tmask, float("-inf")), -1), backend)
    helper([(2, 3, 8), (8,), (8,)], lambda x, w, b: F.layer_norm(x, w, b, 1e-5),
           lambda x, w, b: TF.layer_norm(x, (8,), w, b, 1e-5), backend, atol=1e-9)


def test_embedding_and_losses(backend):
    ids = np.array([[1, 3, 1], [6, 1, 0]])
    helper([(7, 3)], lambda w: F.embedding(ids, w), lambda w: TF.embedding(torch.tensor(ids), w), backend)
    target = np.array([1, 0, -100, 4])
    tt = torch.tensor(target)
    helper([(4, 5)], lambda z: F.cross_entropy(z, target), lambda z: TF.cross_entropy(z, tt), backend)
    helper([(4, 5)], lambda z: F.cross_entropy(z, target, reduction="sum"),
           lambda z: TF.cross_entropy(z, tt, reduction="sum"), backend)
    helper([(3, 4), (3, 4)], F.mse_loss, TF.mse_loss, backend)
    for red in ("batchmean", "mean", "sum"):
        helper([(3, 4), (3, 4)], lambda s, t: F.kl_div(F.log_softmax(s), F.softmax(t), reduction=red),
               lambda s, t: TF.kl_div(torch.log_softmax(s, -1), torch.softmax(t, -1), reduction=red), backend)
        helper([(3, 4), (3, 4)],
               lambda s, t: F.kl_div(F.log_softmax(s), F.log_softmax(t), reduction=red, log_target=True),
               lambda s, t: TF.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), reduction=red,
                                      log_target=True), backend)
