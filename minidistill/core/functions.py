"""The operations on the tape, each a :class:`Function` with a hand-written backward.

Every function here is written once against the backend interface (``ctx.ops``) and the
array operators, so it runs unchanged on NumPy, Numba and Torch arrays. The lower-case
functions at the bottom of each section are the public, functional API
(``minidistill.nn.functional`` re-exports them).

Shapes in comments: B batch, T tokens, H heads, D width, C classes, N = all leading dims.
"""

from __future__ import annotations

import builtins

import numpy as np

from .tensor import Context, Function, Tensor, get_default_dtype, is_grad_enabled


def numel(a) -> int:
    """Number of elements of a backend array (``.size`` is a method on torch tensors)."""
    return int(np.prod(a.shape))


def _as_tensor(x, like: Tensor) -> Tensor:
    """Lift a Python number or array to a constant tensor on ``like``'s backend."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    dtype = like.dtype if arr.dtype.kind in "fiub" and like.dtype.kind == "f" else None
    return Tensor._wrap(like.backend.asarray(arr, dtype=dtype), like.backend)


def _binary(fn, a, b) -> Tensor:
    if not isinstance(a, Tensor):
        a = _as_tensor(a, b)
    if not isinstance(b, Tensor):
        b = _as_tensor(b, a)
    return fn.apply(a, b)


# ---------------------------------------------------------------- arithmetic
class Add(Function):
    """``a + b`` with broadcasting."""

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx: Context, g):
        sa, sb = ctx.shapes
        return ctx.ops.sum_to_shape(g, sa), ctx.ops.sum_to_shape(g, sb)


class Sub(Function):
    """``a - b`` with broadcasting."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return ctx.ops.sum_to_shape(g, sa), ctx.ops.sum_to_shape(-g, sb)


class Mul(Function):
    """``a * b`` with broadcasting."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        # BEGIN TASK 0.4
        a, b = ctx.saved
        ops = ctx.ops
        da = ops.sum_to_shape(g * b, a.shape) if ctx.needs_input_grad[0] else None
        db = ops.sum_to_shape(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db
        # END TASK 0.4


class Div(Function):
    """``a / b`` with broadcasting."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        # BEGIN TASK 0.4
        a, b = ctx.saved
        ops = ctx.ops
        da = ops.sum_to_shape(g / b, a.shape) if ctx.needs_input_grad[0] else None
        db = ops.sum_to_shape(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db
        # END TASK 0.4


class Neg(Function):
    """``-a``."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class Pow(Function):
    """``a ** p`` for a constant Python number ``p``."""

    @staticmethod
    def forward(ctx, a, p: float):
        ctx.save(a)
        ctx.p = p
        return a**p

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g * ctx.p * a ** (ctx.p - 1), None


def add(a, b) -> Tensor:
    """``a + b`` (broadcasting)."""
    return _binary(Add, a, b)


def sub(a, b) -> Tensor:
    """``a - b`` (broadcasting)."""
    return _binary(Sub, a, b)


def mul(a, b) -> Tensor:
    """``a * b`` (broadcasting)."""
    return _binary(Mul, a, b)


def div(a, b) -> Tensor:
    """``a / b`` (broadcasting)."""
    return _binary(Div, a, b)


def neg(a: Tensor) -> Tensor:
    """``-a``."""
    return Neg.apply(a)


def pow(a: Tensor, p: float) -> Tensor:  # noqa: A001 - mirrors the operator
    """``a ** p`` for a constant exponent."""
    if isinstance(p, Tensor):
        raise TypeError("pow: the exponent must be a Python number")
    return Pow.apply(a, float(p))


# ----------------------------------------------------------- elementwise math
class Exp(Function):
    """``exp(a)``."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.ops.exp(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y,)


class Log(Function):
    """``log(a)``."""

    @staticmethod
    def forward(ctx, a):
        ctx.save(a)
        return ctx.ops.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return (g / a,)


class Sqrt(Function):
    """``sqrt(a)``."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.ops.sqrt(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * 0.5 / y,)


class Tanh(Function):
    """``tanh(a)``."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.ops.tanh(a)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * (1.0 - y * y),)


class Sigmoid(Function):
    """``1 / (1 + exp(-a))``, computed as ``(1 + tanh(a/2)) / 2`` to avoid overflow."""

    @staticmethod
    def forward(ctx, a):
        y = 0.5 * (1.0 + ctx.ops.tanh(0.5 * a))
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y * (1.0 - y),)


class Relu(Function):
    """``max(a, 0)``."""

    @staticmethod
    def forward(ctx, a):
        keep = a > 0
        ctx.save(keep)
        return a * keep

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved
        return (g * keep,)


class Gelu(Function):
    """BERT's GELU, ``0.5 x (1 + erf(x/√2))`` (the exact erf form, not the tanh one)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return ctx.ops.gelu_forward(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (ctx.ops.gelu_backward(x, g),)


class Cast(Function):
    """Convert between float dtypes (the gradient is cast back)."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype_in = ctx.ops.dtype(a)
        return ctx.ops.cast(a, dtype)

    @staticmethod
    def backward(ctx, g):
        return ctx.ops.cast(g, ctx.dtype_in), None


def exp(a: Tensor) -> Tensor:
    """Elementwise exponential."""
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    """Elementwise natural logarithm."""
    return Log.apply(a)


def sqrt(a: Tensor) -> Tensor:
    """Elementwise square root."""
    return Sqrt.apply(a)


def tanh(a: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return Tanh.apply(a)


def sigmoid(a: Tensor) -> Tensor:
    """Elementwise logistic sigmoid."""
    return Sigmoid.apply(a)


def relu(a: Tensor) -> Tensor:
    """Elementwise rectifier."""
    return Relu.apply(a)


def gelu(a: Tensor) -> Tensor:
    """BERT's exact (erf) GELU."""
    return Gelu.apply(a)


def cast(a: Tensor, dtype) -> Tensor:
    """``a`` converted to ``dtype``."""
    return Cast.apply(a, np.dtype(dtype).name)


# ------------------------------------------------------------------- matmuls
def _low_precision(ctx: Context, *arrays):
    """Under ``autocast``: ``arrays`` cast to the low precision (None stays None), and the
    float dtype to cast products back to; otherwise ``(arrays, None)`` unchanged. Integer
    operands (int8 layers) never take part."""
    lp, ops = ctx.autocast, ctx.ops
    first = next((a for a in arrays if a is not None), None)
    if lp is None or first is None or ops.dtype(first).kind != "f":
        return arrays, None
    if lp not in ops.low_precision:
        raise RuntimeError(f"autocast({lp!r}) needs a backend with {lp} matrix products (the torch backend); "
                           f"the {ops.name} backend has none: train with precision='fp32' there")
    back = first.dtype
    return tuple(None if a is None else ops.cast(a, lp) for a in arrays), back


def _back(ops, y, dtype):
    """A low-precision product cast back to the float dtype (no-op outside autocast)."""
    return y if dtype is None else ops.cast(y, dtype)


class MatMul(Function):
    """Batched, broadcasting ``a @ b``; 1-D operands are promoted as in NumPy.

    Under ``autocast`` the product (and both products of the backward) run in the low
    precision on copies cast once; the saved operands are those copies (half the memory).
    """

    @staticmethod
    def forward(ctx, a, b):
        (a, b), ctx.back = _low_precision(ctx, a, b)
        ctx.save(a, b)
        return _back(ctx.ops, ctx.ops.matmul(a, b), ctx.back)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ops = ctx.ops
        if ctx.back is not None:
            g = ops.cast(g, ctx.autocast)
        # Promote 1-D operands to matrices so one rule covers every case.
        a2 = ops.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
        b2 = ops.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = ops.reshape(g2, g2.shape[:-1] + (1, g2.shape[-1])) if b.ndim > 1 else ops.reshape(g2, (1, 1))
        if b.ndim == 1:
            g2 = ops.reshape(g2, tuple(g2.shape) + (1,)) if a.ndim > 1 else g2
        da = db = None
        if ctx.needs_input_grad[0]:
            da = _back(ops, ops.matmul(g2, _swap_last(ops, b2)), ctx.back)  # (..., n, m) @ (..., m, k)
            da = ops.sum_to_shape(da, a2.shape) if da.ndim >= a2.ndim else da
            da = ops.reshape(da, a.shape)
        if ctx.needs_input_grad[1]:
            db = _back(ops, ops.matmul(_swap_last(ops, a2), g2), ctx.back)  # (..., k, n) @ (..., n, m)
            db = ops.sum_to_shape(db, b2.shape)
            db = ops.reshape(db, b.shape)
        return da, db


def _swap_last(ops, a):
    axes = list(range(a.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return ops.transpose(a, tuple(axes))


class Linear(Function):
    """``y = x Wᵀ + b (+ residual)``: W stored (out, in) as in PyTorch and HF checkpoints.

    The bias and optional residual are added in one epilogue (``ops.linear_forward``): the
    Numba backend fuses it into a single pass over the output, torch into its GEMM. Under
    ``autocast`` the GEMMs run in the low precision (see :class:`MatMul`); the bias gradient
    is summed in float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None):
        x2, y = linear_forward_2d(ctx, x, weight, bias, residual)
        ctx.save(x2, ctx.weight_used)
        return y

    @staticmethod
    def backward(ctx, g):
        # BEGIN TASK 1.1
        ops = ctx.ops
        x2, weight = ctx.saved
        d_out = weight.shape[0]
        g2 = ops.reshape(g, (-1, d_out))  # (N, out)
        need = ctx.needs_input_grad
        gl = g2 if ctx.back is None else ops.cast(g2, ctx.autocast)  # (N, out) in the product precision
        dx = ops.reshape(_back(ops, ops.matmul(gl, weight), ctx.back), ctx.lead + (weight.shape[1],)) if need[0] else None
        dw = _back(ops, ops.matmul(ops.transpose(gl, (1, 0)), x2), ctx.back) if need[1] else None  # (out, in)
        db = ops.sum(g2, axis=0) if len(need) > 2 and need[2] else None
        dr = g if len(need) > 3 and need[3] else None
        return dx, dw, db, dr
        # END TASK 1.1


def linear_forward_2d(ctx, x, weight, bias=None, residual=None):
    """The shared forward of the linear Functions: checks the width, runs ``x Wᵀ + b (+ r)``
    on rows and sets ``ctx.lead``; returns ``(x2 (N, in), y (..., out))``.

    Under ``autocast`` the GEMM and its bias run in the low precision and the residual is
    added in float32; ``x2`` and ``ctx.weight_used`` are then the low-precision copies (what a
    backward should save) and ``ctx.back`` the float dtype (else None)."""
    ops = ctx.ops
    d_in, d_out = weight.shape[1], weight.shape[0]
    if x.shape[-1] != d_in:
        raise ValueError(f"linear: input width {x.shape[-1]} does not match weight {tuple(weight.shape)} (out, in)")
    lead = tuple(x.shape[:-1])
    x2 = ops.reshape(x, (-1, d_in))  # (N, in)
    r2 = None if residual is None else ops.reshape(residual, (-1, d_out))  # (N, out)
    (x2, weight, bias), ctx.back = _low_precision(ctx, x2, weight, bias)
    if ctx.back is None:
        y = ops.linear_forward(x2, weight, bias, r2)  # (N, out)
    else:
        y = ops.bias_add(ops.cast(ops.linear_forward(x2, weight, bias), ctx.back), None, r2)  # (N, out) float32
    ctx.lead, ctx.weight_used = lead, weight
    return x2, ops.reshape(y, lead + (d_out,))


def matmul(a, b) -> Tensor:
    """Batched, broadcasting matrix product."""
    return _binary(MatMul, a, b)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias (+ residual)``.

    Args:
        x: (..., in). weight: (out, in). bias: (out,) or None. residual: (..., out) or None.
    """
    args = [x, weight]
    if bias is not None or residual is not None:
        args.append(bias)
    if residual is not None:
        args.append(residual)
    return Linear.apply(*args)


class FusedAttention(Function):
    """``softmax(q kᵀ · scale, mask) v`` in one fused kernel (``ops.attention_forward``): the
    (B, H, T, T) probabilities are never stored, and the backward recomputes what it needs
    from q, k, v and the softmax statistics (flash / memory-efficient attention). Under
    ``autocast`` q, k, v go in at the low precision and the output comes back in float32."""

    @staticmethod
    def forward(ctx, q, k, v, mask=None, scale: float = 1.0, dropout_p: float = 0.0):
        ops = ctx.ops
        (q, k, v), ctx.back = _low_precision(ctx, q, k, v)
        out, ctx.state = ops.attention_forward(q, k, v, mask, scale, dropout_p,
                                               grad=any(ctx.needs_input_grad) and is_grad_enabled())
        if ctx.state is not None:
            ctx.save(q, k, v, out)  # what the kernel's own graph holds (for the tape's byte count)
        return _back(ops, out, ctx.back)

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        grads = ops.attention_backward(ctx.state, g, tuple(ctx.needs_input_grad[:3]))
        ctx.state = None
        return tuple(None if d is None else _back(ops, d, ctx.back) for d in grads) + (None,) * (
            len(ctx.needs_input_grad) - 3)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask=None, scale: float | None = None,
                    dropout: float = 0.0) -> Tensor:
    """Scaled dot-product attention without materialised maps, on backends that have a fused
    kernel (``ops.fused_attention``: torch); q, k, v (B, H, T, d) → (B, H, T, d).

    ``mask``: a keep-mask broadcastable to (B, H, T, T). ``dropout``: on the attention
    probabilities (training only; drawn from the backend's generator).
    """
    if not q.backend.fused_attention:
        raise NotImplementedError(f"the {q.backend.name} backend has no fused attention kernel")
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    return FusedAttention.apply(q, k, v, _mask_data(mask, q.backend), scale=scale, dropout_p=float(dropout))


# ------------------------------------------------------------------- shapes
class Reshape(Function):
    """A new shape over the same elements."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape_in = tuple(a.shape)
        return ctx.ops.reshape(a, tuple(shape))

    @staticmethod
    def backward(ctx, g):
        return ctx.ops.reshape(g, ctx.shape_in), None


class Permute(Function):
    """Reorder dimensions (transpose is a permute of two)."""

    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return ctx.ops.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        inverse = tuple(int(i) for i in np.argsort(ctx.dims))
        return ctx.ops.transpose(g, inverse), None


class GetItem(Function):
    """``a[index]``: slices, ints, None, Ellipsis and integer/boolean arrays."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape_in = tuple(a.shape)
        ctx.index = index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        return ctx.ops.getitem_backward(g, ctx.index, ctx.shape_in), None


class Concat(Function):
    """Join tensors along an axis."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return ctx.ops.concat(list(arrays), axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis = ctx.axis % g.ndim
        out, start = [], 0
        for size in ctx.sizes:
            index = (slice(None),) * axis + (slice(start, start + size),)
            out.append(g[index])
            start += size
        return tuple(out)


def reshape(a: Tensor, shape) -> Tensor:
    """``a`` with a new shape (one entry may be -1)."""
    shape = tuple(int(s) for s in shape)
    if -1 not in shape and int(np.prod(shape)) != a.size:
        raise ValueError(f"reshape: cannot reshape {a.shape} ({a.size} elements) into {shape}")
    return Reshape.apply(a, shape)


def permute(a: Tensor, dims) -> Tensor:
    """Reorder the dimensions of ``a``."""
    dims = tuple(int(d) % a.ndim for d in dims)
    if sorted(dims) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of {a.ndim} dimensions")
    return Permute.apply(a, dims)


def transpose(a: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    """Swap dimensions ``dim0`` and ``dim1``."""
    dims = list(range(a.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(a, tuple(dims))


def getitem(a: Tensor, index) -> Tensor:
    """``a[index]``, differentiable (repeated advanced indices accumulate)."""
    ops = a.backend

    def convert(i):
        if isinstance(i, Tensor):
            i = i.data
        if isinstance(i, (np.ndarray, list)):
            i = ops.asarray(np.array(i))  # index arrays live on the tensor's backend
        return i

    index = tuple(convert(i) for i in index) if isinstance(index, tuple) else convert(index)
    return GetItem.apply(a, index)


def concat(tensors, axis: int = 0) -> Tensor:
    """Join ``tensors`` along ``axis``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat: needs at least one tensor")
    return Concat.apply(*tensors, axis=axis)


# --------------------------------------------------------------- reductions
def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(int(a) % ndim for a in axis))


def _expand_reduced(ops, g, axes, shape_in, keepdims):
    """Bring a reduced gradient back to the input's shape (inserting the reduced axes)."""
    if not keepdims:
        kept = [1 if i in axes else s for i, s in enumerate(shape_in)]
        g = ops.reshape(g, tuple(kept))
    return ops.broadcast_to(g, shape_in)


class Sum(Function):
    """Sum over axes."""

    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.axes, ctx.keepdims, ctx.shape_in = axes, keepdims, tuple(a.shape)
        return ctx.ops.sum(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand_reduced(ctx.ops, g, ctx.axes, ctx.shape_in, ctx.keepdims), None, None


class Mean(Function):
    """Mean over axes."""

    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.axes, ctx.keepdims, ctx.shape_in = axes, keepdims, tuple(a.shape)
        ctx.count = int(np.prod([a.shape[i] for i in axes]))
        return ctx.ops.sum(a, axis=axes, keepdims=keepdims) / ctx.count

    @staticmethod
    def backward(ctx, g):
        return _expand_reduced(ctx.ops, g / ctx.count, ctx.axes, ctx.shape_in, ctx.keepdims), None, None


class Max(Function):
    """Maximum over axes; tied maxima share the gradient equally."""

    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ops = ctx.ops
        m = ops.max(a, axis=axes, keepdims=True)
        winners = a == m
        ctx.save(winners)
        ctx.axes, ctx.keepdims, ctx.shape_in = axes, keepdims, tuple(a.shape)
        return m if keepdims else ops.reshape(m, tuple(s for i, s in enumerate(a.shape) if i not in axes))

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        (winners,) = ctx.saved
        w = ops.cast(winners, ops.dtype(g).name)
        w = w / ops.sum(w, axis=ctx.axes, keepdims=True)
        return _expand_reduced(ops, g, ctx.axes, ctx.shape_in, ctx.keepdims) * w, None, None


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum of ``a`` over ``axis`` (None: all)."""
    return Sum.apply(a, _norm_axes(axis, a.ndim), keepdims)


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean of ``a`` over ``axis`` (None: all)."""
    return Mean.apply(a, _norm_axes(axis, a.ndim), keepdims)


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum of ``a`` over ``axis`` (None: all)."""
    return Max.apply(a, _norm_axes(axis, a.ndim), keepdims)


# ------------------------------------------------------------- normalisers
def _mask_data(mask, ops):
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        mask = mask.data
    mask = ops.asarray(mask)
    return mask if ops.dtype(mask) == np.bool_ else mask != 0


class Softmax(Function):
    """Softmax of ``scale · x`` over the last axis with an optional keep-mask (True = keep)."""

    @staticmethod
    def forward(ctx, x, mask=None, scale=1.0):
        y = ctx.ops.softmax_forward(x, mask, scale)
        ctx.save(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return ctx.ops.softmax_backward(y, g, ctx.scale), None


class LogSoftmax(Function):
    """Log-softmax over the last axis with an optional keep-mask; masked entries are -inf."""

    @staticmethod
    def forward(ctx, x, mask=None):
        y = ctx.ops.log_softmax_forward(x, mask)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return ctx.ops.log_softmax_backward(y, g), None


def _last_axis(fn, x: Tensor, axis: int, mask, **kwargs):
    axis = axis % x.ndim
    mask = _mask_data(mask, x.backend)
    if axis == x.ndim - 1:
        return fn.apply(x, mask, **kwargs)
    if mask is not None:  # bring the mask's axis last as well
        mask = x.backend.broadcast_to(mask, x.shape)
        dims = [d for d in range(x.ndim) if d != axis] + [axis]
        mask = x.backend.transpose(mask, tuple(dims))
    dims = tuple(d for d in range(x.ndim) if d != axis) + (axis,)
    y = fn.apply(permute(x, dims), mask, **kwargs)
    return permute(y, tuple(int(i) for i in np.argsort(dims)))


def softmax(x: Tensor, axis: int = -1, mask=None, scale: float = 1.0) -> Tensor:
    """Softmax of ``scale · x`` along ``axis``.

    Args:
        mask: boolean (or 0/1) array broadcastable to ``x``; False entries get probability 0
            and a fully masked row gives all zeros.
        scale: multiplies ``x`` inside the kernel (attention's 1/√d, a distillation
            temperature's 1/T) at no extra pass over memory.
    """
    if scale != 1.0:
        return _last_axis(Softmax, x, axis, mask, scale=float(scale))
    return _last_axis(Softmax, x, axis, mask)


def log_softmax(x: Tensor, axis: int = -1, mask=None) -> Tensor:
    """Log-softmax along ``axis`` (masked entries are -inf, with zero gradient)."""
    return _last_axis(LogSoftmax, x, axis, mask)


class LayerNorm(Function):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (biased variance)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean_, rstd = ctx.ops.layer_norm_forward(x, weight, bias, eps)
        ctx.save(x, weight, mean_, rstd)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean_, rstd = ctx.saved
        dx, dw, db = ctx.ops.layer_norm_backward(g, x, weight, mean_, rstd)
        return dx, dw, db, None


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-12) -> Tensor:
    """LayerNorm over the last axis of ``x`` (..., D) with ``weight`` and ``bias`` (D,)."""
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(f"layer_norm: weight {weight.shape} / bias {bias.shape} do not fit width {x.shape[-1]}")
    return LayerNorm.apply(x, weight, bias, float(eps))


# ------------------------------------------------------------- regularisers
class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""

    @staticmethod
    def forward(ctx, x, p):
        ops = ctx.ops
        keep = ops.rand(tuple(x.shape), ops.dtype(x).name) >= p
        scale = ops.cast(keep, ops.dtype(x).name) * (1.0 / (1.0 - p))
        ctx.save(scale)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        (scale,) = ctx.saved
        return g * scale, None


def dropout(x: Tensor, p: float = 0.1, training: bool = True) -> Tensor:
    """Inverted dropout; the identity when not training or ``p == 0``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, float(p))


class Embedding(Function):
    """Row lookup ``weight[ids]``; the backward scatter-adds rows (repeated ids accumulate).

    As in PyTorch, the row ``padding_idx`` (if given) receives no gradient, so padding
    tokens never move their embedding.
    """

    @staticmethod
    def forward(ctx, ids, weight, padding_idx=None):
        ctx.save(ids)
        ctx.num, ctx.padding_idx = weight.shape[0], padding_idx
        return weight[ids]

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved
        table = ctx.ops.embedding_backward(ids, g, ctx.num)
        if ctx.padding_idx is not None:
            table[ctx.padding_idx] = 0.0
        return None, table


def embedding(ids, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Look up rows of ``weight`` (V, D) at integer ``ids`` (...), giving (..., D).

    ``padding_idx``: a row that gets no gradient (PyTorch's convention).
    """
    ops = weight.backend
    raw = ops.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ops.dtype(raw).kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got {ops.dtype(raw)}")
    num = weight.shape[0]
    if numel(raw) and (int(raw.min()) < 0 or int(raw.max()) >= num):
        raise IndexError(
            f"embedding: ids must lie in [0, {num}), got values in [{int(raw.min())}, {int(raw.max())}]"
        )
    return Embedding.apply(Tensor._wrap(raw, ops), weight, padding_idx=padding_idx)


# ------------------------------------------------------------------- losses
class CrossEntropy(Function):
    """Mean negative log-likelihood of integer targets under softmax(logits)."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, reduction):
        ops = ctx.ops
        c = logits.shape[-1]
        logp = ops.log_softmax_forward(ops.reshape(logits, (-1, c)))  # (N, C)
        t = ops.reshape(target, (-1,))
        valid = t != ignore_index
        safe_t = ops.where(valid, t, 0)
        rows = ops.arange(logp.shape[0])
        picked = -logp[rows, safe_t] * ops.cast(valid, ops.dtype(logp).name)  # (N,)
        count = builtins.max(int(ops.sum(ops.cast(valid, "int64"))), 1)
        ctx.save(logp, safe_t, valid)
        ctx.reduction, ctx.count, ctx.shape_in = reduction, count, tuple(logits.shape)
        if reduction == "none":
            return ops.reshape(picked, tuple(target.shape))
        total = ops.sum(picked)
        return total / count if reduction == "mean" else total

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        logp, t, valid = ctx.saved
        rows = ops.arange(logp.shape[0])
        grad = ops.exp(logp)  # softmax (N, C)
        grad[rows, t] -= 1.0
        w = ops.cast(valid, ops.dtype(logp).name)  # (N,)
        if ctx.reduction == "none":
            w = w * ops.reshape(g, (-1,))
        else:
            w = w * (g / ctx.count if ctx.reduction == "mean" else g)
        grad = grad * ops.reshape(w, (-1, 1))
        return ops.reshape(grad, ctx.shape_in), None, None, None


def _check_reduction(reduction, allowed=("mean", "sum", "none")):
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


def cross_entropy(logits: Tensor, target, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (..., C) against integer ``target`` (...).

    Targets equal to ``ignore_index`` contribute nothing; ``mean`` divides by the number of
    counted targets.
    """
    _check_reduction(reduction)
    ops = logits.backend
    raw = target.data if isinstance(target, Tensor) else ops.asarray(target)
    if tuple(raw.shape) != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: target shape {tuple(raw.shape)} does not match logits {logits.shape}")
    return CrossEntropy.apply(logits, Tensor._wrap(raw, ops), int(ignore_index), reduction)


class MSE(Function):
    """Mean (or summed) squared difference."""

    @staticmethod
    def forward(ctx, a, b, reduction):
        diff = a - b
        ctx.save(diff)
        ctx.reduction = reduction
        sq = diff * diff
        if reduction == "none":
            return sq
        total = ctx.ops.sum(sq)
        return total / numel(diff) if reduction == "mean" else total

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved
        scale = 2.0 / numel(diff) if ctx.reduction == "mean" else 2.0
        d = diff * (g * scale)
        need = ctx.needs_input_grad
        return (d if need[0] else None), (-d if need[1] else None), None


def mse_loss(a: Tensor, b, reduction: str = "mean") -> Tensor:
    """Squared error between ``a`` and ``b`` (same shape)."""
    _check_reduction(reduction)
    if not isinstance(b, Tensor):
        b = _as_tensor(b, a)
    if a.shape != b.shape:
        raise ValueError(f"mse_loss: shapes {a.shape} and {b.shape} differ")
    return MSE.apply(a, b, reduction)


class KLDiv(Function):
    """``Σ p (log p - log q)`` from the student's log-probabilities and the target."""

    @staticmethod
    def forward(ctx, log_q, target, log_target, reduction):
        ops = ctx.ops
        if log_target:
            log_p, p = target, ops.exp(target)
        else:
            p = target
            log_p = ops.log(ops.where(p > 0, p, 1.0))  # 0 log 0 = 0
        # Where p = 0 the term is 0 whatever log q is (it may be -inf at masked entries):
        # mask both logs first so no 0 · inf is ever formed.
        support = p > 0
        diff = ops.where(support, log_p, 0.0) - ops.where(support, log_q, 0.0)
        term = p * diff
        ctx.save(p, diff, support)
        ctx.log_target, ctx.reduction = log_target, reduction
        ctx.scale = _kl_scale(reduction, log_q)
        if reduction == "none":
            return term
        return ops.sum(term) * ctx.scale

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        p, diff, support = ctx.saved
        gs = g if ctx.reduction == "none" else g * ctx.scale
        d_log_q = -p * gs if ctx.needs_input_grad[0] else None
        d_target = None
        if ctx.needs_input_grad[1]:
            inner = ops.where(support, diff + 1.0, 0.0) * gs
            d_target = inner * p if ctx.log_target else inner
        return d_log_q, d_target, None, None


def _kl_scale(reduction, x) -> float:
    if reduction == "sum":
        return 1.0
    if reduction == "batchmean":
        return 1.0 / x.shape[0]
    if reduction == "mean":
        return 1.0 / numel(x)
    return 1.0


def kl_div(log_q: Tensor, target, reduction: str = "batchmean", log_target: bool = False) -> Tensor:
    """KL(p ‖ q) with the student's ``log_q`` and the teacher's ``target`` (p, or log p).

    Same argument order and reductions as ``torch.nn.functional.kl_div``: ``batchmean``
    divides by the first dimension, ``mean`` by the number of elements.
    """
    _check_reduction(reduction, ("batchmean", "mean", "sum", "none"))
    if not isinstance(target, Tensor):
        target = _as_tensor(target, log_q)
    if target.shape != log_q.shape:
        raise ValueError(f"kl_div: shapes {log_q.shape} and {target.shape} differ")
    return KLDiv.apply(log_q, target, bool(log_target), reduction)


def zeros(shape, dtype=None, backend=None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros."""
    from ..backends import get_backend

    ops = get_backend(backend)
    return Tensor._wrap(ops.zeros(tuple(shape), np.dtype(dtype or get_default_dtype()).name), ops, requires_grad)
