"""Finite-difference gradient checks of every core op, on every backend, in float64.

Inputs are made non-contiguous (transposed, strided, sliced) by hypothesis, since the
kernels must handle any layout.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidistill as md
from minidistill.core import functions as F
from minidistill.core.gradcheck import GradcheckError

from .conftest import rand

LAYOUTS = ["contiguous", "transposed", "strided", "sliced"]


def make(shape, layout="contiguous", seed=0, scale=1.0, positive=False):
    """A float64 array of ``shape`` laid out in memory as ``layout``."""
    base = rand(shape, seed, scale)
    if positive:
        base = np.abs(base) + 0.5
    if layout == "transposed" and len(shape) >= 2:
        arr = np.ascontiguousarray(np.swapaxes(base, -1, -2)).swapaxes(-1, -2)
    elif layout == "strided":
        big = np.zeros(shape[:-1] + (shape[-1] * 2,))
        big[..., ::2] = base
        arr = big[..., ::2]
    elif layout == "sliced" and len(shape) >= 1:
        big = np.zeros((shape[0] + 2,) + shape[1:])
        big[1:-1] = base
        arr = big[1:-1]
    else:
        arr = base
    assert np.array_equal(arr, base)
    return arr


def T(arr, grad=True):
    """A float64 tensor on the current backend (NumPy/Numba keep the non-contiguous view)."""
    ops = md.current_backend()
    return md.Tensor(arr if ops.name != "torch" else np.ascontiguousarray(arr), requires_grad=grad)


layouts = st.sampled_from(LAYOUTS)
check = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@check
@given(layout=layouts)
def test_elementwise_and_broadcasting(backend, layout):
    a = T(make((3, 4), layout, 1))
    b = T(make((4,), layout, 2, positive=True))
    c = T(make((3, 1), layout, 3))
    assert md.gradcheck(lambda a, b, c: (a + b) * c - a / b + (-c) ** 2, a, b, c)
    assert md.gradcheck(lambda a: 2.0 - a * 3.0 + 1.0 / (a * a + 1.0), a)


@check
@given(layout=layouts)
def test_unary_math(backend, layout):
    p = T(make((3, 5), layout, 4, positive=True))
    x = T(make((3, 5), layout, 5))
    assert md.gradcheck(lambda p: F.log(p) + F.sqrt(p) + p ** 1.5, p)
    assert md.gradcheck(lambda x: F.exp(x) + F.tanh(x) + F.sigmoid(x) + F.gelu(x), x)
    assert md.gradcheck(lambda x: F.relu(x + 0.05), x)  # no sample sits on the kink


@check
@given(layout=layouts)
def test_matmul_batched_broadcast(backend, layout):
    a = T(make((2, 3, 4), layout, 6))
    b = T(make((4, 5), layout, 7))
    v = T(make((4,), "contiguous", 8))
    assert md.gradcheck(lambda a, b: a @ b, a, b)
    assert md.gradcheck(lambda a, v: F.matmul(a, v), a, v)
    assert md.gradcheck(lambda v, b: F.matmul(v, b), v, b)
    c = T(make((2, 1, 3, 4), layout, 9))
    d = T(make((5, 4, 2), layout, 10))
    assert md.gradcheck(lambda c, d: c @ d, c, d)


@check
@given(layout=layouts, with_residual=st.booleans())
def test_linear(backend, layout, with_residual):
    x = T(make((2, 3, 4), layout, 11))
    w = T(make((5, 4), layout, 12))
    b = T(make((5,), "contiguous", 13))
    r = T(make((2, 3, 5), layout, 14))
    if with_residual:
        assert md.gradcheck(lambda x, w, b, r: F.linear(x, w, b, r), x, w, b, r)
    else:
        assert md.gradcheck(lambda x, w, b: F.linear(x, w, b), x, w, b)
        assert md.gradcheck(lambda x, w: F.linear(x, w), x, w)


@check
@given(layout=layouts)
def test_shapes_indexing_concat(backend, layout):
    x = T(make((2, 3, 4), layout, 15))
    y = T(make((2, 2, 4), layout, 16))
    assert md.gradcheck(lambda x: x.reshape(4, 6).T * 1.0, x)
    assert md.gradcheck(lambda x: x.permute(2, 0, 1), x)
    assert md.gradcheck(lambda x: x.transpose(0, 2), x)
    assert md.gradcheck(lambda x: x[:, 1:, ::2], x)
    assert md.gradcheck(lambda x: x[1, :, 0], x)
    idx = np.array([0, 2, 2, 1])
    assert md.gradcheck(lambda x: x[:, idx], x)  # repeated indices accumulate
    assert md.gradcheck(lambda x, y: F.concat([x, y, x], axis=1), x, y)


@check
@given(layout=layouts, keepdims=st.booleans())
def test_reductions(backend, layout, keepdims):
    x = T(make((3, 4, 5), layout, 17))
    assert md.gradcheck(lambda x: x.sum(axis=1, keepdims=keepdims), x)
    assert md.gradcheck(lambda x: x.mean(axis=(0, 2), keepdims=keepdims), x)
    assert md.gradcheck(lambda x: x.max(axis=-1, keepdims=keepdims), x)
    assert md.gradcheck(lambda x: x.sum() + x.mean() + x.max(), x)


@check
@given(layout=layouts)
def test_softmax_family_with_mask(backend, layout):
    x = T(make((2, 3, 5), layout, 18))
    mask = np.ones((2, 1, 5), dtype=bool)
    mask[0, :, 3:] = False
    assert md.gradcheck(lambda x: F.softmax(x, axis=-1), x)
    assert md.gradcheck(lambda x: F.softmax(x, axis=1), x)
    assert md.gradcheck(lambda x: F.softmax(x, mask=mask), x)
    assert md.gradcheck(lambda x: F.log_softmax(x), x)
    keep = np.broadcast_to(mask, (2, 3, 5))
    # masked log-probabilities are -inf: check the finite part only
    assert md.gradcheck(lambda x: F.log_softmax(x, mask=mask)[keep], x)


@check
@given(layout=layouts)
def test_layer_norm(backend, layout):
    x = T(make((2, 3, 6), layout, 19, scale=3.0))
    w = T(make((6,), "contiguous", 20))
    b = T(make((6,), "contiguous", 21))
    assert md.gradcheck(lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5), x, w, b)


def test_embedding_scatter_add(backend):
    w = T(make((7, 3), "contiguous", 22))
    ids = np.array([[1, 3, 1], [6, 1, 0]])
    assert md.gradcheck(lambda w: F.embedding(ids, w), w)


def test_losses(backend):
    logits = T(make((4, 5), "contiguous", 23))
    target = np.array([1, 0, -100, 4])
    assert md.gradcheck(lambda z: F.cross_entropy(z, target), logits)
    assert md.gradcheck(lambda z: F.cross_entropy(z, target, reduction="sum"), logits)
    assert md.gradcheck(lambda z: F.cross_entropy(z, target, reduction="none"), logits)
    a = T(make((3, 4), "contiguous", 24))
    b = T(make((3, 4), "contiguous", 25))
    assert md.gradcheck(lambda a, b: F.mse_loss(a, b), a, b)
    s = T(make((3, 4), "contiguous", 26))
    t = T(make((3, 4), "contiguous", 27))
    for red in ("batchmean", "mean", "sum", "none"):
        assert md.gradcheck(lambda s, t: F.kl_div(F.log_softmax(s), F.softmax(t), reduction=red), s, t)
        assert md.gradcheck(lambda s, t: F.kl_div(F.log_softmax(s), F.log_softmax(t), reduction=red, log_target=True), s, t)


def test_dropout_gradient_uses_the_same_mask(backend):
    x = T(make((4, 6), "contiguous", 28))
    md.manual_seed(3)
    y = F.dropout(x, 0.5, training=True)
    y.backward(backend.ones_like(y.data))
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad if isinstance(x.grad, np.ndarray) else backend.to_numpy(x.grad), kept * 2.0)
    assert F.dropout(x, 0.5, training=False) is x


def test_kl_of_a_distribution_with_itself_is_zero(backend):
    z = T(make((3, 5), "contiguous", 29))
    kl = F.kl_div(F.log_softmax(z), F.softmax(z))
    assert abs(kl.item()) < 1e-12


def test_gradcheck_catches_a_wrong_backward(cpu_backend):
    class WrongSquare(md.core.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved
            return (g * a,)  # should be 2 a

    x = T(make((3,), "contiguous", 30))
    with pytest.raises(GradcheckError, match="mismatches"):
        md.gradcheck(lambda x: WrongSquare.apply(x), x)


def test_tape_accumulates_shared_use_and_frees_graph(cpu_backend):
    x = md.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x + x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1)
    y2 = (x * 2.0).sum()
    y2.backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1 + 2)  # gradients accumulate
    with md.no_grad():
        z = x * 2.0
    assert not z.requires_grad and z.is_leaf


def test_float32_is_the_default_dtype(backend):
    assert md.Tensor([1.0, 2.0]).dtype == np.float32
    assert md.Tensor(np.zeros(2)).dtype == np.float64
    assert md.Tensor([1, 2]).dtype == np.int64


def test_mixing_backends_in_one_op_is_an_error():
    a = md.Tensor([1.0], backend="numpy")
    b = md.Tensor([1.0], backend="numba")
    with pytest.raises(md.core.BackendMismatchError, match="'numpy' and 'numba'"):
        a + b
