"""Module 2: Numba kernels (debug one as plain Python with NUMBA_DISABLE_JIT=1)."""

from __future__ import annotations

import numpy as np
import pytest

from minidistill.backends import get_backend
from minidistill.backends import numba_ops

from .conftest import rng


@pytest.mark.task2_1
@pytest.mark.parametrize("m, k, n", [(7, 5, 3), (1, 1, 9), (33, 17, 20)])
def test_teaching_matmul_matches_numpy(m, k, n):
    a, b = rng(0).standard_normal((m, k)), rng(1).standard_normal((k, n))
    np.testing.assert_allclose(numba_ops.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


@pytest.mark.task2_1
def test_teaching_matmul_overwrites_its_output():
    a, b = rng(0).standard_normal((4, 3)), rng(1).standard_normal((3, 2))
    out = np.full((4, 2), 7.0)
    numba_ops.matmul_kernel(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


@pytest.mark.task2_2
@pytest.mark.parametrize("dtype, offset", [("float64", 0.0), ("float32", 1000.0)])
def test_fused_layer_norm_forward_matches_torch(dtype, offset, torch):
    ops = get_backend("numba")
    x = (rng(0).standard_normal((6, 32)) + offset).astype(dtype)
    w, b = rng(1).standard_normal(32).astype(dtype), rng(2).standard_normal(32).astype(dtype)
    y, mean, rstd = ops.layer_norm_forward(x, w, b, 1e-12 if dtype == "float64" else 1e-5)
    x64 = torch.tensor(x.astype(np.float64))
    ref = torch.nn.functional.layer_norm(x64, (32,), torch.tensor(w, dtype=torch.float64),
                                         torch.tensor(b, dtype=torch.float64), eps=1e-12 if dtype == "float64" else 1e-5)
    tol = 1e-10 if dtype == "float64" else 2e-4
    np.testing.assert_allclose(y, ref.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(-1), rtol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.astype(np.float64).var(-1) + (1e-12 if dtype == "float64" else 1e-5)),
                               rtol=1e-4)


@pytest.mark.task2_3
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_fused_softmax_backward_matches_torch(scale, torch):
    ops = get_backend("numba")
    x, g = rng(0).standard_normal((3, 4, 9)), rng(1).standard_normal((3, 4, 9))
    tx = torch.tensor(x, requires_grad=True)
    y = torch.softmax(tx * scale, -1)
    y.backward(torch.tensor(g))
    np.testing.assert_allclose(ops.softmax_backward(y.detach().numpy(), g, scale), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.task2_4
@pytest.mark.parametrize("use_bias, use_residual", [(True, True), (True, False), (False, True)])
def test_epilogue_adds_in_place(use_bias, use_residual):
    y = rng(0).standard_normal((5, 6))
    bias, res = rng(1).standard_normal(6), rng(2).standard_normal((5, 6))
    want = y + (bias if use_bias else 0) + (res if use_residual else 0)
    out = y.copy()
    numba_ops.bias_residual_kernel(out, bias if use_bias else out[0], res if use_residual else out, use_bias, use_residual)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    y2 = y.copy()
    got = get_backend("numba").bias_add(y2, bias if use_bias else None, res if use_residual else None)
    assert got is y2, "the epilogue should write into y, not allocate"
    np.testing.assert_allclose(got, want, rtol=1e-12)
