"""Module 0: the tape and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.backends import get_backend
from minidistill.core import functions as F
from minidistill.core.gradcheck import central_difference
from minidistill.core.tensor import Context, _topological_order

from .conftest import rng


def _leaf(shape, seed=0):
    return md.Tensor(rng(seed).standard_normal(shape), requires_grad=True, backend="numpy")


@pytest.mark.task0_1
def test_order_puts_inputs_before_outputs_once():
    x, w = _leaf((3,)), _leaf((3,), 1)
    a, b = F.exp(x), F.tanh(x)  # x feeds two branches
    y = a + b
    z = F.sum(y + w)
    order = _topological_order(z)
    ids = [id(t) for t in order]
    assert len(ids) == len(set(ids)), "a tensor appears twice"
    assert ids[-1] == id(z._entry())
    assert {id(t._entry()) for t in (x, w, a, b, y, z)} <= set(ids)  # computed tensors: by their tape entries
    pos = {i: k for k, i in enumerate(ids)}
    for t in order:
        if t._node is not None:
            for inp in t._node[2]:
                if getattr(inp, "requires_grad", False):
                    assert pos[id(inp)] < pos[id(t)], "an input comes after the tensor computed from it"


@pytest.mark.task0_1
def test_order_skips_constants_and_backward_sums_both_branches():
    x = _leaf((4,))
    c = md.Tensor(np.ones(4), backend="numpy")  # a constant: not on the tape
    z = F.sum(F.exp(x) + F.tanh(x) + c)
    assert all(t.requires_grad for t in _topological_order(z))
    z.backward()
    xv = x.numpy()
    np.testing.assert_allclose(x.grad, np.exp(xv) + 1 - np.tanh(xv) ** 2, rtol=1e-12)


@pytest.mark.task0_1
def test_order_handles_a_deep_chain():
    x = _leaf((2,))
    y = x
    for _ in range(3000):  # deeper than Python's recursion limit
        y = F.tanh(y)
    order = _topological_order(F.sum(y))
    assert len(order) == 3002


@pytest.mark.task0_2
@pytest.mark.parametrize("shape_g, shape", [((4, 3, 5), (3, 1)), ((4, 3, 5), (5,)), ((4, 3, 5), (1, 1, 5)),
                                            ((2, 3), ()), ((6, 1, 4), (6, 1, 1))])
def test_sum_to_shape_is_the_adjoint_of_broadcasting(shape_g, shape):
    ops = get_backend("numpy")
    g = rng(0).standard_normal(shape_g)
    out = ops.sum_to_shape(g, shape)
    assert tuple(out.shape) == tuple(shape)
    for seed in range(3):  # <broadcast(a), g> = <a, sum_to_shape(g)> for every a
        a = rng(seed + 1).standard_normal(shape)
        np.testing.assert_allclose(np.sum(np.broadcast_to(a, shape_g) * g), np.sum(a * out), rtol=1e-10)


@pytest.mark.task0_3
def test_central_difference_matches_the_derivative_and_restores_the_input():
    x = rng(0).standard_normal((3, 4))
    w = rng(1).standard_normal((3, 4))
    before = x.copy()
    num = central_difference(lambda: float(np.sum(np.sin(x) * w)), x, eps=1e-6)
    assert num.shape == x.shape
    np.testing.assert_allclose(num, np.cos(before) * w, atol=1e-8)
    np.testing.assert_array_equal(x, before)


@pytest.mark.task0_3
def test_central_difference_has_second_order_error():
    # For f = Σ x³ the central difference is exactly 3x² + eps²; a one-sided one is off by ~3x·eps.
    x = np.array([0.5, -1.0, 2.0])
    eps = 1e-3
    num = central_difference(lambda: float(np.sum(x**3)), x, eps=eps)
    np.testing.assert_allclose(num - 3 * x**2, eps**2, atol=1e-9)


def _function_grads(fn, a, b, g, need=(True, True)):
    ops = get_backend("numpy")
    ctx = Context(ops, need)
    fn.forward(ctx, a, b)
    return fn.backward(ctx, g)


@pytest.mark.task0_4
@pytest.mark.parametrize("name", ["Mul", "Div"])
def test_product_and_quotient_rules_match_torch(name, torch):
    a, b = rng(0).standard_normal((3, 4)), rng(1).standard_normal((3, 4)) + 3.0
    g = rng(2).standard_normal((3, 4))
    da, db = _function_grads(getattr(F, name), a, b, g)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out = ta * tb if name == "Mul" else ta / tb
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-12)


@pytest.mark.task0_4
@pytest.mark.parametrize("name", ["Mul", "Div"])
def test_no_gradient_for_an_input_that_needs_none(name):
    a, b = rng(0).standard_normal((2, 2)), rng(1).standard_normal((2, 2)) + 3.0
    da, db = _function_grads(getattr(F, name), a, b, np.ones((2, 2)), need=(True, False))
    assert db is None and da is not None
