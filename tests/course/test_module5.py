"""Module 5: compression (WID compactors, Theseus schedules, a PHM weight)."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress.theseus import ConstantReplacement, LinearReplacement
from minidistill.compress.wid import CompactedLinear, MaskGroup, _State
from minidistill.nn.functional import kron_weight
from minidistill.nn.layers import Linear

from .conftest import rng


def _compacted(hard: bool):
    with md.use_backend("numpy"):
        lin = Linear(4, 3).to(dtype="float64")
    lin.weight.data[...] = rng(0).standard_normal((3, 4))
    lin.bias.data[...] = rng(1).standard_normal(3)
    gin, gout, state = MaskGroup("in", 4, 2), MaskGroup("out", 3, 2), _State()
    layer = CompactedLinear(lin, gin, gout, state)
    layer.col_compactor.data[...] = rng(2).standard_normal((4, 4))
    layer.row_compactor.data[...] = rng(3).standard_normal((3, 3))
    gin.keep[[1]] = 0.0
    gout.keep[[2]] = 0.0
    state.hard = hard
    return layer


@pytest.mark.task5_1
@pytest.mark.parametrize("hard", [False, True])
def test_compacted_linear_is_column_compactor_then_linear_then_row_compactor(hard):
    layer = _compacted(hard)
    x = rng(4).standard_normal((5, 4))
    c, w = layer.col_compactor.numpy().copy(), layer.weight.numpy()
    r, b = layer.row_compactor.numpy().copy(), layer.bias.numpy()
    if hard:
        c[:, layer.in_group.keep == 0] = 0.0
        r[layer.out_group.keep == 0, :] = 0.0
    want = ((x @ c.T) @ w.T + b) @ r.T  # y = R (W (C x) + b), row vectors
    np.testing.assert_allclose(layer(md.Tensor(x, backend="numpy")).numpy(), want, rtol=1e-12, atol=1e-12)
    weff, beff = layer.effective()
    assert weff.shape == (3, 4) and beff.shape == (3,)


@pytest.mark.task5_1
def test_compactor_gradients_flow():
    layer = _compacted(False)
    x = md.Tensor(rng(4).standard_normal((5, 4)), backend="numpy")
    layer(x).sum().backward()
    assert layer.col_compactor.grad is not None and layer.row_compactor.grad is not None


@pytest.mark.task5_2
def test_constant_replacement_rate():
    sched = ConstantReplacement(rate=0.3, steps=10)
    assert [sched(s) for s in (0, 5, 9, 10, 50)] == [0.3, 0.3, 0.3, 1.0, 1.0]


@pytest.mark.task5_2
def test_curriculum_replacement_rate():
    sched = LinearReplacement(base=0.2, slope=0.1)
    np.testing.assert_allclose([sched(s) for s in (0, 1, 5, 8, 9, 100)], [0.2, 0.3, 0.7, 1.0, 1.0, 1.0])


@pytest.mark.task5_3
@pytest.mark.parametrize("n, out, inp", [(2, 4, 6), (4, 8, 12), (3, 9, 3)])
def test_phm_weight_equals_sum_of_kronecker_products(n, out, inp):
    a = rng(0).standard_normal((n, n, n))
    s, t = rng(1).standard_normal((n, out // n)), rng(2).standard_normal((n, inp // n))
    want = sum(np.kron(a[i], np.outer(s[i], t[i])) for i in range(n))
    with md.use_backend("numpy"):
        got = kron_weight(md.Tensor(a), md.Tensor(s), md.Tensor(t)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
