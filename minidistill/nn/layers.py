"""Basic layers: Linear, Embedding, LayerNorm, Dropout, multi-head self-attention and LSTM.

Weights are named and shaped as in PyTorch and HF checkpoints (Linear weight (out, in)),
so loading a checkpoint is a key-by-key copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

from . import functional as F
from ..core.tensor import Tensor
from . import init
from .module import Module, Parameter


class LinearMap(Module):
    """A module that applies ``y = x Wᵀ + b`` with the weight and bias that :meth:`effective`
    returns; :class:`Linear` stores them, a subclass may compute them (a compacted linear map
    ``R W C``, say).

    Two hooks let a compression method change a linear map without the layer knowing it:
    override :meth:`effective` (what W and b are), or set ``linear_fn`` on one layer (how
    they are applied and differentiated: a callable ``fn(x, weight, bias, residual) -> Tensor``
    used instead of :func:`~minidistill.core.functions.linear`, e.g. one that saves less for
    backward). Weight names stay the checkpoint's either way.
    """

    #: a replacement of :func:`~minidistill.core.functions.linear` for this layer, or None
    linear_fn = None

    def effective(self) -> tuple[Tensor, Tensor | None]:  # pragma: no cover - interface
        """The weight (out, in) and bias (out,) or None that the forward applies."""
        raise NotImplementedError

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``x`` (..., in) → (..., out); ``residual`` (..., out) is added in the same epilogue."""
        w, b = self.effective()
        return (self.linear_fn or F.linear)(x, w, b, residual)


class Linear(LinearMap):
    """``y = x Wᵀ + b`` with W (out_features, in_features).

    Initialised U(±1/√in) as PyTorch; models re-initialise as their papers say.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(init.uniform((out_features, in_features), bound))
        self.bias = Parameter(init.uniform((out_features,), bound)) if bias else None

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """The stored weight and bias."""
        return self.weight, self.bias

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table (num_embeddings, embedding_dim); row ``padding_idx`` gets no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        w = init.normal((num_embeddings, embedding_dim), 1.0)
        if padding_idx is not None:
            w[padding_idx] = 0.0
        self.weight = Parameter(w)

    def forward(self, ids) -> Tensor:
        """Integer ``ids`` (...) → (..., embedding_dim)."""
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """LayerNorm over the last dimension, with weight (γ) and bias (β)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-12):
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(init.ones((normalized_shape,)))
        self.bias = Parameter(init.zeros((normalized_shape,)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (..., D)."""
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout, active only in training mode."""

    def __init__(self, p: float = 0.1):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Drop elements of ``x`` with probability p when training."""
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


_FUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("minidistill_fused_attention", default=True)


@contextlib.contextmanager
def fused_attention_enabled(enabled: bool):
    """Allow (default) or forbid the fused attention kernel inside this block; forbidding it
    runs the materialised path everywhere (to compare the two, or to debug)."""
    token = _FUSED.set(bool(enabled))
    try:
        yield
    finally:
        _FUSED.reset(token)


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """Scaled dot products ``q kᵀ / √d`` for q, k (B, H, T, d) → (B, H, T, T)."""
    return F.matmul(q, F.transpose(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, T)


class MultiHeadSelfAttention(Module):
    """Multi-head self-attention with separate ``query`` / ``key`` / ``value`` projections.

    ``forward`` returns the per-head context (B, T, D) before the output projection, the
    attention probabilities (B, H, T, T) and the pre-softmax scores (B, H, T, T); BERT adds
    its output projection, dropout, residual and LayerNorm in a separate module, as HF does.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0):
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of the number of heads {num_heads}")
        self.num_attention_heads = num_heads
        self.attention_head_size = hidden_size // num_heads
        self.all_head_size = hidden_size
        self.query = Linear(hidden_size, hidden_size)
        self.key = Linear(hidden_size, hidden_size)
        self.value = Linear(hidden_size, hidden_size)
        self.dropout = Dropout(dropout)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, H·d) → (B, H, T, d)."""
        b, t, _ = x.shape
        return F.transpose(x.reshape(b, t, self.num_attention_heads, self.attention_head_size), 1, 2)

    def forward(self, x: Tensor, mask=None, return_scores: bool = False, return_qkv: bool = False,
                return_probs: bool = True):
        """Attend over ``x`` (B, T, D) with a keep-``mask`` broadcastable to (B, H, T, T).

        The 1/√d scaling is applied after ``q kᵀ`` (the reference order) inside the softmax
        kernel; the scaled scores are only materialised when ``return_scores`` is set. When
        neither the probabilities nor the scores are wanted and the backend has a fused kernel
        (torch's ``scaled_dot_product_attention``), that kernel runs instead and no (T, T) map
        is stored (see :func:`fused_attention_enabled`).

        Returns:
            ``(context, probs, scores, qkv)``: (B, T, D), (B, H, T, T) or None (fused path),
            the scaled scores (B, H, T, T) or None, and ``(q, k, v)`` each (B, H, T, d) when
            ``return_qkv``.
        """
        # BEGIN TASK 1.4
        b, t, _ = x.shape
        q = self.split_heads(self.query(x))  # (B, H, T, d)
        k = self.split_heads(self.key(x))  # (B, H, T, d)
        v = self.split_heads(self.value(x))  # (B, H, T, d)
        scale = 1.0 / math.sqrt(self.attention_head_size)
        if not (return_probs or return_scores) and x.backend.fused_attention and _FUSED.get():
            p = self.dropout.p if self.training else 0.0
            context = F.fused_attention(q, k, v, mask, scale=scale, dropout=p)  # (B, H, T, d)
            probs = scores = None
        else:
            raw = F.matmul(q, F.transpose(k, -1, -2))  # (B, H, T, T)
            probs = F.softmax(raw, axis=-1, mask=mask, scale=scale)  # (B, H, T, T)
            scores = raw * scale if return_scores else None  # (B, H, T, T)
            context = F.matmul(self.dropout(probs), v)  # (B, H, T, d)
        context = F.transpose(context, 1, 2).reshape(b, t, self.all_head_size)  # (B, T, D)
        return context, probs, scores, ((q, k, v) if return_qkv else None)
        # END TASK 1.4


class LSTM(Module):
    """A (bi)directional, multi-layer LSTM over batch-first input, with torch.nn.LSTM's
    parameter names and shapes (``weight_ih_l0`` (4H, D), ``weight_hh_l0`` (4H, H),
    ``bias_ih_l0``, ``bias_hh_l0``, ``…_reverse`` for the backward direction), so a
    torch state dict loads key by key. Initialised U(±1/√H) as torch.

    The recurrence runs in ``ops.lstm_forward`` / ``lstm_backward`` (a fused Numba kernel
    per step on the Numba backend); padded steps (``mask`` = 0, right padding) are skipped
    the way packed sequences skip them.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0):
        if num_layers < 1:
            raise ValueError(f"LSTM needs at least one layer, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional = bidirectional
        self.dropout = Dropout(dropout)
        bound = 1.0 / math.sqrt(hidden_size)
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * dirs
            for suffix in self._suffixes(layer):
                setattr(self, f"weight_ih{suffix}", Parameter(init.uniform((4 * hidden_size, width), bound)))
                setattr(self, f"weight_hh{suffix}", Parameter(init.uniform((4 * hidden_size, hidden_size), bound)))
                setattr(self, f"bias_ih{suffix}", Parameter(init.uniform((4 * hidden_size,), bound)))
                setattr(self, f"bias_hh{suffix}", Parameter(init.uniform((4 * hidden_size,), bound)))

    def _suffixes(self, layer: int):
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def forward(self, x: Tensor, mask=None) -> Tensor:
        """``x`` (B, T, D) → (B, T, H · directions); ``mask`` (B, T) nonzero for real tokens."""
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTM expects (B, T, {self.input_size}) input, got {tuple(x.shape)}")
        for layer in range(self.num_layers):
            if layer:
                x = self.dropout(x)  # between layers, as torch
            outs = [F.lstm(x, getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}"),
                           getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}"), mask,
                           reverse=sfx.endswith("_reverse"))
                    for sfx in self._suffixes(layer)]  # each (B, T, H)
            x = outs[0] if len(outs) == 1 else F.concat(outs, axis=-1)  # (B, T, H · dirs)
        return x

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}")
