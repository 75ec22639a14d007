"""The functional API (``from minidistill.nn import functional as F``): every differentiable op.

The generic ops (arithmetic, matmuls, normalisers, losses, shapes) live in
:mod:`minidistill.core.functions` and are re-exported here; the ops that belong to one kind of
layer are defined here: the Kronecker-product (PHM) linear map of :class:`~minidistill.nn.PHMLinear`
and the LSTM recurrence of :class:`~minidistill.nn.LSTM`.
"""

from __future__ import annotations

from ..core.functions import (  # noqa: F401 - the generic ops, re-exported
    add, cast, concat, cross_entropy, div, dropout, embedding, exp, fused_attention, gelu, getitem, kl_div,
    layer_norm, linear, log, log_softmax, matmul, max, mean, mse_loss, mul, neg, permute, pow, relu,
    reshape, sigmoid, softmax, sqrt, sub, sum, tanh, transpose, zeros,
)
from ..core.functions import _mask_data
from ..core.tensor import Function, Tensor


# ------------------------------------------------------- Kronecker (PHM) layers
def _phm_shapes(x_width: int, rule, out_factor, in_factor) -> tuple[int, int, int]:
    """(n, p, q) of a PHM product with m terms: rule (m, n, n), factors (m, q) and (m, p)
    (m = n for rank-one fast weights; m = n · rank when each B_i is a sum of rank-one terms)."""
    if rule.ndim != 3 or rule.shape[1] != rule.shape[2]:
        raise ValueError(f"phm: the rule must be (terms, n, n), got {tuple(rule.shape)}")
    m, n = rule.shape[0], rule.shape[1]
    if out_factor.ndim != 2 or in_factor.ndim != 2 or out_factor.shape[0] != m or in_factor.shape[0] != m:
        raise ValueError(f"phm: factors must be (terms={m}, out/n) and (terms={m}, in/n), got "
                         f"{tuple(out_factor.shape)} and {tuple(in_factor.shape)}")
    p, q = in_factor.shape[1], out_factor.shape[1]
    if x_width != n * p:
        raise ValueError(f"phm: input width {x_width} does not match n · in/n = {n} · {p}")
    return n, p, q


class PHMLinear(Function):
    """``y = x Wᵀ + b`` with ``W = Σ_i A_i ⊗ (s_i t_iᵀ)`` (out, in), W never built;
    see ``Ops.phm_forward`` for the three small products that replace it."""

    @staticmethod
    def forward(ctx, x, rule, out_factor, in_factor, bias=None):
        ops = ctx.ops
        n, p, q = _phm_shapes(x.shape[-1], rule, out_factor, in_factor)
        lead = tuple(x.shape[:-1])
        x2 = ops.reshape(x, (-1, n * p))  # (N, in)
        y, saved = ops.phm_forward(x2, rule, out_factor, in_factor)  # (N, out)
        if bias is not None:
            y = ops.bias_add(y, bias)
        ctx.save(x2, rule, out_factor, in_factor)
        ctx.phm_saved, ctx.lead = saved, lead
        return ops.reshape(y, lead + (n * q,))

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        x2, rule, out_factor, in_factor = ctx.saved
        g2 = ops.reshape(g, (-1, g.shape[-1]))  # (N, out)
        dx, d_rule, d_out, d_in = ops.phm_backward(g2, x2, rule, out_factor, in_factor, ctx.phm_saved)
        need = ctx.needs_input_grad
        db = ops.sum(g2, axis=0) if len(need) > 4 and need[4] else None
        return ops.reshape(dx, ctx.lead + (x2.shape[1],)), d_rule, d_out, d_in, db


def phm_linear(x: Tensor, rule: Tensor, out_factor: Tensor, in_factor: Tensor, bias: Tensor | None = None) -> Tensor:
    """A parameterised-hypercomplex (PHM) linear map, ``x Wᵀ + b`` with
    ``W = Σ_{i=1..n} A_i ⊗ (s_i t_iᵀ)``, computed without materialising W.

    Args:
        x: (..., in). rule: (n, n, n), ``rule[i]`` = A_i. out_factor: (n, out/n), row i = s_i.
        in_factor: (n, in/n), row i = t_i. bias: (out,) or None.

    More generally the sum may have m terms ``rule[j] ⊗ s_j t_jᵀ`` with rule (m, n, n) and
    factors (m, ·): fast weights of rank r are m = n r terms whose rules repeat each A_i r times.
    """
    args = [x, rule, out_factor, in_factor] + ([bias] if bias is not None else [])
    return PHMLinear.apply(*args)


def kron_weight(rule: Tensor, out_factor: Tensor, in_factor: Tensor) -> Tensor:
    """The PHM weight ``W = Σ_i A_i ⊗ (s_i t_iᵀ)`` (out, in), built explicitly (differentiable).

    ``W[b q + l, a p + k] = Σ_i A_i[b, a] s_i[l] t_i[k]``: one (n², m) @ (m, q p) product over
    the m terms (m = n for rank-one fast weights).
    """
    n, p, q = _phm_shapes(rule.shape[1] * in_factor.shape[1], rule, out_factor, in_factor)
    m = rule.shape[0]
    # BEGIN TASK 5.3
    blocks = reshape(out_factor, (m, q, 1)) * reshape(in_factor, (m, 1, p))  # (m, q, p): B_i = s_i t_iᵀ
    a = transpose(reshape(rule, (m, n * n)), 0, 1)  # (b·a, i)
    w = matmul(a, reshape(blocks, (m, q * p)))  # (b·a, q·p)
    w = permute(reshape(w, (n, n, q, p)), (0, 2, 1, 3))  # (b, q, a, p)
    return reshape(w, (n * q, n * p))  # (out, in)
    # END TASK 5.3


# ------------------------------------------------------------- recurrences
class LSTMRecurrence(Function):
    """One LSTM direction over precomputed input gates; see ``Ops.lstm_forward``."""

    @staticmethod
    def forward(ctx, xg, w_hh, mask=None, reverse=False):
        if xg.ndim != 3 or xg.shape[-1] != w_hh.shape[0] or w_hh.shape[0] != 4 * w_hh.shape[1]:
            raise ValueError(f"lstm: input gates {tuple(xg.shape)} (B, T, 4H) do not fit W_hh {tuple(w_hh.shape)} (4H, H)")
        out, saved = ctx.ops.lstm_forward(xg, w_hh, mask, reverse)
        ctx.save(*saved)
        ctx.w_hh, ctx.mask, ctx.reverse = w_hh, mask, reverse
        return out

    @staticmethod
    def backward(ctx, g):
        dxg, dw = ctx.ops.lstm_backward(g, ctx.w_hh, ctx.saved, ctx.mask, ctx.reverse)
        return dxg, (dw if ctx.needs_input_grad[1] else None), None


def lstm(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None, b_hh: Tensor | None = None,
         mask=None, reverse: bool = False) -> Tensor:
    """One LSTM direction, torch.nn.LSTM's equations and gate order (i, f, g, o)::

        (i, f, g, o) = σ, σ, tanh, σ of  x_t W_ihᵀ + b_ih + h_(t−1) W_hhᵀ + b_hh
        c_t = f ⊙ c_(t−1) + i ⊙ g,      h_t = o ⊙ tanh(c_t)

    Args:
        x: (B, T, D). w_ih: (4H, D). w_hh: (4H, H). b_ih, b_hh: (4H,) or None.
        mask: (B, T), nonzero for real tokens (right padding); padded steps output zeros
            and leave the state alone, as packed sequences do. reverse: run right to left.

    Returns:
        (B, T, H) hidden states.
    """
    bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    xg = linear(x, w_ih, bias)  # (B, T, 4H): one GEMM for every step's input projection
    return LSTMRecurrence.apply(xg, w_hh, _mask_data(mask, x.backend), reverse=reverse)
