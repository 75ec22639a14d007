"""The NumPy backend: the reference implementation of every backend operation.

Plain and readable first. Faster backends (Numba) override the hot paths and are tested
against these definitions.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Ops

# ``math.erf`` applied elementwise: exact to double precision. NumPy has no erf ufunc, and
# this reference backend prefers exactness over speed (the Numba backend is the fast path).
_erf_object = np.frompyfunc(math.erf, 1, 1)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def np_erf(x: np.ndarray) -> np.ndarray:
    """Elementwise ``erf`` in float64, returned in ``x``'s dtype."""
    return _erf_object(np.asarray(x, dtype=np.float64)).astype(x.dtype)


def _is_basic_index(index) -> bool:
    """True for indices made only of ints, slices, None and Ellipsis (no repeats possible)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class NumpyOps(Ops):
    """Reference backend over ``numpy.ndarray`` on the CPU."""

    name = "numpy"
    device = "cpu"

    def __init__(self, seed: int = 0):
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def __repr__(self):
        return f"<backend {self.name}>"

    # ------------------------------------------------------------------ arrays
    def is_array(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x, dtype=None):
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=None if dtype is None else np.dtype(dtype))

    def to_numpy(self, a):
        return np.asarray(a)

    def dtype(self, a):
        return a.dtype

    def cast(self, a, dtype):
        return a.astype(np.dtype(dtype), copy=False)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=np.dtype(dtype))

    def zeros_like(self, a):
        return np.zeros_like(a)

    def ones_like(self, a):
        return np.ones_like(a)

    def arange(self, n, dtype="int64"):
        return np.arange(n, dtype=np.dtype(dtype))

    def copy(self, a):
        return np.array(a, copy=True, order="C")

    # -------------------------------------------------------------- randomness
    def seed(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def get_rng_state(self):
        return self._rng.bit_generator.state

    def set_rng_state(self, state) -> None:
        self._rng.bit_generator.state = state

    def rand(self, shape, dtype):
        return self._rng.random(shape, dtype=np.dtype(dtype))

    def randn(self, shape, dtype):
        return self._rng.standard_normal(shape, dtype=np.dtype(dtype))

    # ---------------------------------------------------------- elementwise math
    def exp(self, a):
        return np.exp(a)

    def log(self, a):
        return np.log(a)

    def tanh(self, a):
        return np.tanh(a)

    def sqrt(self, a):
        return np.sqrt(a)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    # --------------------------------------------------------------- reductions
    def sum(self, a, axis=None, keepdims=False):
        return np.sum(a, axis=axis, keepdims=keepdims)

    def max(self, a, axis=None, keepdims=False):
        return np.max(a, axis=axis, keepdims=keepdims)

    def argmax(self, a, axis=-1):
        return np.argmax(a, axis=axis)

    # ------------------------------------------------------------------- shapes
    def reshape(self, a, shape):
        return np.reshape(a, shape)

    def transpose(self, a, axes):
        return np.transpose(a, axes)

    def concat(self, arrays, axis=0):
        return np.concatenate(arrays, axis=axis)

    def broadcast_to(self, a, shape):
        return np.broadcast_to(a, shape)

    def getitem_backward(self, g, index, shape):
        out = np.zeros(shape, dtype=g.dtype)
        if _is_basic_index(index):
            out[index] = g  # basic indexing never selects an element twice
        else:
            np.add.at(out, index, g)  # advanced indexing may repeat: accumulate
        return out

    # ------------------------------------------------------------- linear algebra
    def matmul(self, a, b):
        return np.matmul(a, b)

    # ------------------------------------------------------------------- int8
    def quantize_int8(self, x, scale):
        return np.clip(np.round(x / scale), -127, 127).astype(np.int8)

    def int8_matmul(self, a, b):
        # the reference: widen to int32 and multiply (NumPy's integer matmul has no BLAS)
        return np.matmul(a.astype(np.int32), b.astype(np.int32).T)

    # ------------------------------------------------------------ fused hot paths
    def bias_add(self, y, bias=None, residual=None):
        if bias is not None:
            y = y + bias
        if residual is not None:
            y = y + residual
        return y

    def gelu_forward(self, x):
        return 0.5 * x * (1.0 + np_erf(x * _INV_SQRT2))

    def gelu_backward(self, x, g):
        # BEGIN TASK 1.5
        cdf = 0.5 * (1.0 + np_erf(x * _INV_SQRT2))  # Φ(x)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)  # φ(x)
        return g * (cdf + x * pdf)
        # END TASK 1.5

    def softmax_forward(self, x, mask=None, scale=1.0):
        if scale != 1.0:
            x = x * scale
        if mask is not None:
            x = np.where(mask, x, -np.inf)
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)  # fully masked rows: avoid inf - inf
        e = np.exp(x - m)
        s = np.sum(e, axis=-1, keepdims=True)
        return (e / np.where(s > 0, s, 1.0)).astype(x.dtype, copy=False)

    def softmax_backward(self, y, g, scale=1.0):
        # BEGIN TASK 1.3
        dx = y * (g - np.sum(g * y, axis=-1, keepdims=True))
        return dx * scale if scale != 1.0 else dx
        # END TASK 1.3

    def log_softmax_forward(self, x, mask=None):
        if mask is not None:
            x = np.where(mask, x, -np.inf)
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        shifted = x - m
        s = np.sum(np.exp(shifted), axis=-1, keepdims=True)
        lse = np.log(np.where(s > 0, s, 1.0))  # a fully masked row stays -inf
        return (shifted - lse).astype(x.dtype, copy=False)

    def log_softmax_backward(self, y, g):
        keep = np.isfinite(y)
        g = np.where(keep, g, 0.0)
        p = np.where(keep, np.exp(y), 0.0)
        return (g - p * np.sum(g, axis=-1, keepdims=True)).astype(y.dtype, copy=False)

    def layer_norm_forward(self, x, weight, bias, eps):
        mean = np.mean(x, axis=-1, keepdims=True)
        xc = x - mean
        var = np.mean(xc * xc, axis=-1, keepdims=True)  # biased variance, as BERT
        rstd = 1.0 / np.sqrt(var + eps)
        y = xc * rstd * weight + bias
        return y, mean.reshape(-1), rstd.reshape(-1)

    def layer_norm_backward(self, g, x, weight, mean, rstd):
        # BEGIN TASK 1.2
        d = x.shape[-1]
        x2, g2 = x.reshape(-1, d), g.reshape(-1, d)
        xhat = (x2 - mean[:, None]) * rstd[:, None]
        dweight = np.sum(g2 * xhat, axis=0)
        dbias = np.sum(g2, axis=0)
        gx = g2 * weight  # gradient w.r.t. xhat
        dx = rstd[:, None] * (
            gx - gx.mean(axis=-1, keepdims=True) - xhat * (gx * xhat).mean(axis=-1, keepdims=True)
        )
        return dx.reshape(x.shape), dweight, dbias
        # END TASK 1.2

    def embedding_backward(self, ids, g, num_embeddings):
        d = g.shape[-1]
        table = np.zeros((num_embeddings, d), dtype=g.dtype)
        np.add.at(table, np.asarray(ids).reshape(-1), g.reshape(-1, d))
        return table
