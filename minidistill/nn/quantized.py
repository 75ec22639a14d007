"""Int8 layers: symmetric 8-bit weights and activations, and their fake-quantized twins for
quantization-aware training.

A real number x is stored as an integer q on a grid of step s (the *scale*):

    q = clip(round(x / s), −127, 127),        x ≈ s · q                       (symmetric int8)

The error of one value is at most s / 2 unless it was clipped. Weights get one scale per
output channel (row o of W), activations one per row (*dynamic per token*: computed from the
row itself at run time), one per tensor (*dynamic per tensor*), or one fixed scale measured
beforehand on calibration data (*static*):

    s_w[o] = max_k |W[o, k]| / 127,      s_x[t] = max_k |x[t, k]| / 127

A linear map then runs on integers and rescales once, in its epilogue:

    y[t, o] = (Σ_k Q_x[t, k] Q_w[o, k]) · s_x[t] · s_w[o] + b[o]

with the sum accumulated exactly in int32 (``ops.int8_matmul``). LayerNorm, softmax, GELU,
biases and residuals stay in floating point.

:class:`Int8Linear` and :class:`Int8Embedding` are inference layers: int8 weights, no
gradients. :class:`FakeQuantLinear` keeps float weights and trains them through the same
rounding (the straight-through estimator: ``round`` is treated as the identity in backward,
clipping still zeroes the gradient); it computes the integer product in floating point, which
in float64 is exact, so its forward equals the :class:`Int8Linear` it folds into bit for bit.

Which layers of a model are int8 is recorded in its ``config.json`` (:func:`describe`) and
rebuilt before its weights are loaded (:func:`restore`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.tensor import Function, Tensor
from .layers import Embedding, Linear, LinearMap
from .module import Module, Parameter

QMAX = 127
#: how activations are quantized: a scale per row (token), per tensor, or a calibrated one
ACTIVATIONS = ("per_token", "per_tensor", "static")


def scale_from_absmax(ops, absmax):
    """``absmax / 127``, with 1 where ``absmax`` is 0 (an all-zero row quantizes to zeros)."""
    return ops.where(absmax > 0, absmax / QMAX, ops.ones_like(absmax))


def _absmax(ops, a, axis=None, keepdims=False):
    return ops.max(ops.maximum(a, -a), axis=axis, keepdims=keepdims)


def weight_scales(ops, weight):
    """Per-output-channel scales (out,) of a weight (out, in)."""
    return scale_from_absmax(ops, _absmax(ops, weight, axis=1))


def quantize_weight(ops, weight):
    """``(q int8 (out, in), scale (out,))`` with ``weight ≈ scale[:, None] · q``."""
    s = weight_scales(ops, weight)  # (out,)
    return ops.quantize_int8(weight, ops.reshape(s, (-1, 1))), s


def dequantize(ops, q, scale, dtype):
    """``scale[:, None] · q`` as ``dtype``: the float weight an int8 weight stands for."""
    return ops.cast(q, dtype) * ops.reshape(ops.cast(scale, dtype), (-1, 1))


def activation_scale(ops, x2, mode: str, input_scale=None):
    """The scale of activations ``x2`` (N, in): (N, 1) per token, (1, 1) per tensor or static."""
    if mode == "per_token":
        return scale_from_absmax(ops, _absmax(ops, x2, axis=1, keepdims=True))  # (N, 1)
    if mode == "per_tensor":
        return ops.reshape(scale_from_absmax(ops, _absmax(ops, x2)), (1, 1))  # (1, 1)
    if mode == "static":
        if input_scale is None:
            raise ValueError("static activation quantization needs a calibrated input scale")
        return ops.reshape(ops.cast(input_scale, ops.dtype(x2)), (1, 1))  # (1, 1)
    raise ValueError(f"activations must be one of {ACTIVATIONS}, got {mode!r}")


def _epilogue(ops, acc, s_x, s_w, bias, residual):
    """``acc · (s_x s_wᵀ) + bias + residual``: the one rescaling both int8 paths share, in one
    order, so that they agree to the last bit."""
    scale = s_x * ops.reshape(ops.cast(s_w, ops.dtype(acc)), (1, -1))  # (N | 1, out)
    return ops.bias_add(acc * scale, bias, residual)


def _rows(ops, x, residual, d_in: int, d_out: int):
    if x.shape[-1] != d_in:
        raise ValueError(f"int8 linear: input width {x.shape[-1]} does not match the layer's {d_in}")
    x2 = ops.reshape(x, (-1, d_in))  # (N, in)
    r2 = None if residual is None else ops.reshape(residual, (-1, d_out))  # (N, out)
    return tuple(x.shape[:-1]), x2, r2


class Int8LinearFunction(Function):
    """``y = (Q_x Q_wᵀ) · s_x s_wᵀ + b (+ residual)`` with an exact int32 product."""

    @staticmethod
    def forward(ctx, x, qweight, weight_scale, bias=None, residual=None, mode="per_token", input_scale=None):
        ops = ctx.ops
        lead, x2, r2 = _rows(ops, x, residual, qweight.shape[1], qweight.shape[0])
        s_x = activation_scale(ops, x2, mode, input_scale)  # (N, 1) or (1, 1)
        acc = ops.cast(ops.int8_matmul(ops.quantize_int8(x2, s_x), qweight), ops.dtype(x2))  # (N, out)
        y = _epilogue(ops, acc, s_x, weight_scale, bias, r2)  # (N, out)
        return ops.reshape(y, lead + (qweight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("int8 layers are for inference and have no gradient; to train a quantized model, "
                           "train its fake-quantized version (quantization-aware training) and fold it")


class FakeQuantLinearFunction(Function):
    """The float twin of :class:`Int8LinearFunction` with straight-through gradients.

    Forward: the same integers, multiplied in floating point (exact in float64). Backward,
    with ``round`` read as the identity (Bengio et al.'s straight-through estimator) and the
    scales held constant::

        ∂L/∂x = (g Ŵ) ⊙ [|x / s_x| < 127.5],      ∂L/∂W = (gᵀ x̂) ⊙ [|W / s_w| < 127.5]

    where x̂ = s_x Q_x and Ŵ = s_w Q_w are the dequantized values; an entry gets no gradient
    only when clipping changed it (|x / s| ≥ 127.5 rounds beyond the grid). The bound is on
    x / s, as the forward computes it: a row's largest entry (x / s = 127 up to rounding)
    always counts as inside.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None, mode="per_token", input_scale=None):
        ops = ctx.ops
        lead, x2, r2 = _rows(ops, x, residual, weight.shape[1], weight.shape[0])
        dtype = ops.dtype(x2)
        s_x = activation_scale(ops, x2, mode, input_scale)  # (N, 1) or (1, 1)
        s_w = ops.cast(weight_scales(ops, weight), dtype)  # (out,)
        qx = ops.cast(ops.quantize_int8(x2, s_x), dtype)  # (N, in), integer-valued
        qw = ops.cast(ops.quantize_int8(weight, ops.reshape(s_w, (-1, 1))), dtype)  # (out, in)
        acc = ops.matmul(qx, ops.transpose(qw, (1, 0)))  # (N, out), exact integers in float64
        y = _epilogue(ops, acc, s_x, s_w, bias, r2)  # (N, out)
        ctx.lead = lead
        ctx.save(x2, weight, qx, qw, s_x, s_w)
        return ops.reshape(y, lead + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        x2, weight, qx, qw, s_x, s_w = ctx.saved
        need = ctx.needs_input_grad
        g2 = ops.reshape(g, (-1, weight.shape[0]))  # (N, out)
        dx = dw = db = dr = None
        if need[0]:
            w_hat = qw * ops.reshape(s_w, (-1, 1))  # (out, in)
            inside = _inside_grid(ops, x2, s_x)
            dx = ops.reshape(ops.matmul(g2, w_hat) * inside, ctx.lead + (weight.shape[1],))
        if need[1]:
            x_hat = qx * s_x  # (N, in)
            inside = _inside_grid(ops, weight, ops.reshape(s_w, (-1, 1)))
            dw = ops.matmul(ops.transpose(g2, (1, 0)), x_hat) * inside  # (out, in)
        if len(need) > 2 and need[2]:
            db = ops.sum(g2, axis=0)
        if len(need) > 3 and need[3]:
            dr = g
        return dx, dw, db, dr


def _inside_grid(ops, a, scale):
    """1 where ``a / scale`` rounds onto the grid (|a / scale| < 127.5: not clipped), else 0."""
    r = a / scale
    inside = ops.maximum(r, -r) < QMAX + 0.5
    return ops.where(inside, ops.ones_like(a), ops.zeros_like(a))


class _Int8Base(LinearMap):
    def _init_shapes(self, in_features: int, out_features: int, bias: bool, activations: str, dtype: str):
        from .. import backends

        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
        ops = backends.current_backend()
        self.in_features, self.out_features, self.activations = in_features, out_features, activations
        self.bias = Parameter(ops.zeros((out_features,), dtype), requires_grad=False) if bias else None
        self.input_scale = (Parameter(ops.asarray([1.0], dtype=dtype), requires_grad=False)
                            if activations == "static" else None)

    def extra_repr(self):
        return (f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}, "
                f"activations={self.activations}")


class Int8Linear(_Int8Base):
    """An inference linear layer with int8 weights (``weight`` (out, in) int8, ``weight_scale``
    (out,)) and int8 activations (``activations`` per token, per tensor, or ``static`` with the
    calibrated ``input_scale`` (1,)). Build one with :meth:`from_float`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activations: str = "per_token",
                 dtype: str = "float32"):
        from .. import backends

        ops = backends.current_backend()
        self.weight = Parameter(ops.zeros((out_features, in_features), "int8"), requires_grad=False)
        self.weight_scale = Parameter(ops.asarray([1.0] * out_features, dtype=dtype), requires_grad=False)
        self._init_shapes(in_features, out_features, bias, activations, dtype)

    @classmethod
    def from_float(cls, layer: LinearMap, activations: str = "per_token", input_scale: float | None = None):
        """The int8 version of ``layer`` (its :meth:`effective` weight and bias, quantized per
        output channel); ``input_scale`` is the calibrated activation scale (``static``)."""
        from ..backends import use_backend

        w, b = layer.effective()
        ops = w.backend
        dtype = w.dtype.name
        with use_backend(ops):
            out = cls(w.shape[1], w.shape[0], b is not None, activations, dtype)
        q, s = quantize_weight(ops, w.data)
        out.weight.data, out.weight_scale.data = q, ops.cast(s, dtype)
        if b is not None:
            out.bias.data = ops.copy(b.data)
        if activations == "static":
            if input_scale is None and getattr(layer, "input_scale", None) is not None:
                input_scale = layer.input_scale.data
            if input_scale is None or float(np.asarray(ops.to_numpy(ops.asarray(input_scale))).reshape(-1)[0]) <= 0:
                raise ValueError("static activations need the calibrated input scale (calibrate the model, "
                                 "or train the fake-quantized one, first)")
            out.input_scale.data = ops.reshape(ops.asarray(input_scale, dtype=dtype), (1,))
        return out

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """The dequantized weight (out, in) and the bias: what the layer approximates."""
        ops = self.weight.backend
        dtype = self.weight_scale.dtype.name
        return Tensor(dequantize(ops, self.weight.data, self.weight_scale.data, dtype), backend=ops), self.bias

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``x`` (..., in) → (..., out) on integers (see the module docstring)."""
        return Int8LinearFunction.apply(x, self.weight, self.weight_scale, self.bias, residual, mode=self.activations,
                                        input_scale=None if self.input_scale is None else self.input_scale.data)


class FakeQuantLinear(_Int8Base):
    """A linear layer that trains in float through int8 rounding (quantization-aware training).

    ``weight`` and ``bias`` are ordinary trainable parameters; the forward rounds both the
    weight (per channel) and the input (``activations``) to the int8 grid. For ``static``
    activations, ``input_scale`` follows the largest input seen while training (an
    exponential moving average of each batch's, ``momentum``), as an observer would; 0 means
    not observed yet, and is saved with the weights, so a resumed run goes on where it was.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activations: str = "per_token",
                 dtype: str = "float32", momentum: float = 0.9):
        from .. import backends

        ops = backends.current_backend()
        self.weight = Parameter(ops.zeros((out_features, in_features), dtype))
        self._init_shapes(in_features, out_features, bias, activations, dtype)
        if self.bias is not None:
            self.bias.requires_grad = True
        self.momentum = momentum
        if self.input_scale is not None:  # 0: not observed yet (saved with the weights, so a resumed run knows)
            self.input_scale.data = ops.zeros((1,), dtype)

    @classmethod
    def from_float(cls, layer: LinearMap, activations: str = "per_token", input_scale: float | None = None):
        """A fake-quantized copy of ``layer`` (weights copied, not shared)."""
        from ..backends import use_backend

        w, b = layer.effective()
        ops = w.backend
        with use_backend(ops):
            out = cls(w.shape[1], w.shape[0], b is not None, activations, w.dtype.name)
        out.weight.data = ops.copy(w.data)
        if b is not None:
            out.bias.data = ops.copy(b.data)
        if input_scale is not None and out.input_scale is not None:
            out.input_scale.data = ops.reshape(ops.asarray(input_scale, dtype=w.dtype.name), (1,))
        return out

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """The float weight and bias being trained."""
        return self.weight, self.bias

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``x`` (..., in) → (..., out) through the int8 grid, with straight-through gradients."""
        if self.activations == "static":
            ops = x.backend
            observed = float(ops.to_numpy(self.input_scale.data)[0]) > 0
            if self.training:
                seen = scale_from_absmax(ops, _absmax(ops, x.data))  # this batch's scale
                seen = ops.reshape(ops.cast(seen, self.input_scale.dtype.name), (1,))
                if observed:
                    seen = self.input_scale.data * self.momentum + seen * (1.0 - self.momentum)
                self.input_scale.data = seen
            elif not observed:
                raise ValueError("this layer's static input scale was never observed: calibrate the model "
                                 "(prepare_qat(..., calibration=...)) or train it first")
        return FakeQuantLinearFunction.apply(x, self.weight, self.bias, residual, mode=self.activations,
                                             input_scale=None if self.input_scale is None else self.input_scale.data)


class Int8Embedding(Module):
    """An embedding table stored in int8 with one scale per row (``weight`` (V, D) int8,
    ``weight_scale`` (V,)); a lookup dequantizes only the rows it reads."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, dtype: str = "float32"):
        from .. import backends

        ops = backends.current_backend()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(ops.zeros((num_embeddings, embedding_dim), "int8"), requires_grad=False)
        self.weight_scale = Parameter(ops.asarray([1.0] * num_embeddings, dtype=dtype), requires_grad=False)

    @classmethod
    def from_float(cls, layer: Embedding):
        """The int8 version of ``layer``: each row quantized with its own scale."""
        from ..backends import use_backend

        ops = layer.weight.backend
        dtype = layer.weight.dtype.name
        with use_backend(ops):
            out = cls(layer.num_embeddings, layer.embedding_dim, layer.padding_idx, dtype)
        s = ops.cast(weight_scales(ops, layer.weight.data), dtype)  # a row of the table is a channel
        q = ops.quantize_int8(layer.weight.data, ops.reshape(s, (-1, 1)))
        out.weight.data, out.weight_scale.data = q, s
        return out

    def forward(self, ids) -> Tensor:
        """Integer ``ids`` (...) → (..., D), dequantized."""
        ops = self.weight.backend
        ids = ops.asarray(ids.data if isinstance(ids, Tensor) else ids)
        dtype = self.weight_scale.dtype.name
        rows = ops.cast(self.weight.data[ids], dtype)  # (..., D)
        scale = self.weight_scale.data[ids]  # (...)
        return Tensor(rows * ops.reshape(scale, tuple(scale.shape) + (1,)), backend=ops)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


class FakeQuantRowsFunction(Function):
    """Each row of ``x`` (..., D) rounded to the int8 grid with its own scale, straight through
    in backward (a row's largest entry sets its scale, so nothing is clipped: ∂/∂x = 1)."""

    @staticmethod
    def forward(ctx, x):
        ops = ctx.ops
        x2 = ops.reshape(x, (-1, x.shape[-1]))  # (N, D)
        s = scale_from_absmax(ops, _absmax(ops, x2, axis=1, keepdims=True))  # (N, 1)
        return ops.reshape(ops.cast(ops.quantize_int8(x2, s), ops.dtype(x2)) * s, tuple(x.shape))

    @staticmethod
    def backward(ctx, g):
        return (g,)


class FakeQuantEmbedding(Embedding):
    """An embedding table that trains in float through per-row int8 rounding; folds into the
    :class:`Int8Embedding` with the same lookups."""

    @classmethod
    def from_float(cls, layer: Embedding) -> "FakeQuantEmbedding":
        """A fake-quantized copy of ``layer`` (weights copied)."""
        from ..backends import use_backend

        ops = layer.weight.backend
        with use_backend(ops):
            out = cls(layer.num_embeddings, layer.embedding_dim, layer.padding_idx)
        out.weight.data = ops.copy(layer.weight.data)
        out.weight.requires_grad = layer.weight.requires_grad
        return out

    def forward(self, ids) -> Tensor:
        """Integer ``ids`` (...) → (..., D), each row on its int8 grid."""
        return FakeQuantRowsFunction.apply(super().forward(ids))

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, fake int8"


# ------------------------------------------------------------ whole models
@dataclass
class QuantizedLayout:
    """Which modules of a model are int8 (saved in ``config.json`` under ``quantization``)."""

    activations: str = "per_token"
    linear: tuple = ()  # paths of Int8Linear modules
    embeddings: tuple = ()  # paths of Int8Embedding modules
    bits: int = 8

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"bits": self.bits, "activations": self.activations, "linear": list(self.linear),
                "embeddings": list(self.embeddings)}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantizedLayout":
        """Read the saved form; unknown keys and bad values raise ``ValueError``."""
        unknown = set(d) - {"bits", "activations", "linear", "embeddings"}
        if unknown:
            raise ValueError(f"unknown quantization keys: {', '.join(sorted(unknown))}")
        out = cls(d.get("activations", "per_token"), tuple(d.get("linear", ())), tuple(d.get("embeddings", ())),
                  int(d.get("bits", 8)))
        if out.bits != 8:
            raise ValueError(f"only 8-bit quantization is supported, got bits={out.bits}")
        if out.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {out.activations!r}")
        return out


def describe(model: Module) -> QuantizedLayout | None:
    """The int8 layout of ``model``, or None when it has no int8 module."""
    linear, emb, modes = [], [], set()
    for path, m in model.named_modules():
        if isinstance(m, Int8Linear):
            linear.append(path)
            modes.add(m.activations)
        elif isinstance(m, Int8Embedding):
            emb.append(path)
    if not linear and not emb:
        return None
    if len(modes) > 1:
        raise ValueError(f"a model's int8 layers must share one activation mode, found {sorted(modes)}")
    return QuantizedLayout(modes.pop() if modes else "per_token", tuple(linear), tuple(emb))


def replace_module(model: Module, path: str, new: Module) -> None:
    """Put ``new`` at the dotted ``path`` of ``model`` (``encoder.layer.0.attention.self.query``)."""
    parent, _, name = path.rpartition(".")
    owner = model
    for part in parent.split(".") if parent else ():
        owner = getattr(owner, part)  # a ModuleList's children are attributes "0", "1", …
    setattr(owner, name, new)


def restore(model: Module, layout: QuantizedLayout) -> None:
    """Replace the modules ``layout`` names by empty int8 shells of the same shapes, in place,
    so that a saved int8 model's weights load into them."""
    found = dict(model.named_modules())
    dtype = next(model.parameters()).dtype.name
    for path in layout.linear:
        m = found.get(path)
        if not isinstance(m, Linear):
            raise ValueError(f"quantization layout names {path!r}, which is not a Linear layer of this model")
        replace_module(model, path, Int8Linear(m.in_features, m.out_features, m.bias is not None, layout.activations,
                                               dtype))
    for path in layout.embeddings:
        m = found.get(path)
        if not isinstance(m, Embedding):
            raise ValueError(f"quantization layout names {path!r}, which is not an Embedding of this model")
        replace_module(model, path, Int8Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx, dtype))
