"""CompAct: memory-efficient training by saving compressed activations.

Implements "CompAct: Compressed Activations for Memory-Efficient LLM Training" (Shamshoum,
Hodos, Vainshtein, Sapir, Ben-Itzhak, Bouganim, Dahan, 2024). A Linear layer ``y = x Wᵀ + b``
keeps its input ``x`` (N, d_in) for the backward pass only to form the weight gradient
``∇W = gᵀ x`` (d_out, d_in). CompAct keeps a random projection of it instead:

    z = x P                 P (d_in, r), P_ij ~ N(0, 1/r), regenerated from a seed, never stored
    ∇x = g W                exact: the input gradient needs W, not x
    Ĝ = gᵀ z = ∇W P         (d_out, r): the weight gradient in the compressed space

so the tape holds N·r numbers per layer instead of N·d_in. Two ways to use ``Ĝ``:

* ``variant="compressed"`` (the paper's, GaLore-style): the optimiser's moments live in the
  (d_out, r) space and the update is mapped back, ``ΔW = scale · ρ(Ĝ) Pᵀ`` with ρ the Adam
  direction ``m̂ / (√v̂ + ε)`` (SGD: the momentum buffer). Only for layers whose weight is a
  Parameter (``nn.Linear``); P is redrawn every ``update_proj_gap`` optimiser steps.
* ``variant="unbiased"`` (the teaching step): ``∇W ≈ Ĝ Pᵀ = gᵀ x P Pᵀ``, an unbiased estimate
  because ``E[P Pᵀ] = I``, handed to any optimiser as an ordinary gradient. Also used where the
  weight is computed rather than stored (WID's ``R W C``).

With ``r = d_in`` and an orthogonal P (``projection="orthogonal"``), ``P Pᵀ = I`` and both
variants give the exact gradient. As in the original, the attention output projection
(``attention.output.dense``) is left uncompressed.

Conventions and differences from the original code: P is drawn with NumPy from
``(seed, layer index, step // update_proj_gap)`` on every backend, so a run is reproducible
and resumable across backends; moments are kept when P is redrawn (as GaLore and the original
do — the moments then mix two bases for a while); the compressed gradients take part in
gradient clipping with their own norm (‖Ĝ‖ ≈ ‖∇W‖ by Johnson–Lindenstrauss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.tensor import Function, Tensor

VARIANTS = ("compressed", "unbiased")
PROJECTIONS = ("gaussian", "orthogonal")


@dataclass
class CompActConfig:
    """CompAct's settings (defaults: the paper's for RoBERTa-base on GLUE).

    Args:
        rank: r, the width of the saved projection ``z = x P``.
        variant: ``"compressed"`` (optimiser state in the r-space) or ``"unbiased"``
            (``∇W ≈ gᵀ x P Pᵀ``, any optimiser).
        update_proj_gap: optimiser steps between fresh draws of P.
        scale: multiplies the mapped-back update of the compressed variant.
        projection: ``"gaussian"`` (N(0, 1/r) entries) or ``"orthogonal"`` (orthonormal
            columns scaled by √(d_in / r), so E[P Pᵀ] = I as well; P Pᵀ = I when r = d_in).
        seed: base seed of the projections.
        exclude: name suffixes of Linear layers left uncompressed.
    """

    rank: int = 8
    variant: str = "compressed"
    update_proj_gap: int = 500
    scale: float = 2.0
    projection: str = "gaussian"
    seed: int = 0
    exclude: tuple = ("attention.output.dense",)

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"compact.rank must be a positive integer, got {self.rank!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"compact.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"compact.projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.update_proj_gap < 1:
            raise ValueError(f"compact.update_proj_gap must be ≥ 1, got {self.update_proj_gap}")
        if not self.scale > 0:
            raise ValueError(f"compact.scale must be positive, got {self.scale}")
        self.exclude = tuple(self.exclude)


class LayerProjection:
    """The projection of one layer: P for the current step, redrawn from its seed on demand."""

    def __init__(self, config: CompActConfig, index: int, d_in: int, controller: "CompAct"):
        self.config, self.index, self.d_in, self.controller = config, index, d_in, controller
        self.rank = min(config.rank, d_in)

    @property
    def variant(self) -> str:
        """The variant in force for this layer."""
        return self.config.variant

    def matrix(self, ops, dtype, step: int | None = None):
        """P (d_in, r) on ``ops`` for ``step`` (default: the controller's current step)."""
        step = self.controller.step if step is None else step
        rng = np.random.default_rng([self.config.seed, self.index, step // self.config.update_proj_gap])
        p = rng.standard_normal((self.d_in, self.rank))  # (d_in, r)
        if self.config.projection == "orthogonal":
            q, r = np.linalg.qr(p)
            p = q * np.sign(np.diag(r)) * np.sqrt(self.d_in / self.rank)  # orthonormal columns, E[P Pᵀ] = I
        else:
            p = p / np.sqrt(self.rank)  # N(0, 1/r)
        return ops.asarray(p, dtype=dtype)


class CompActLinear(Function):
    """``y = x Wᵀ + b (+ residual)`` that saves ``z = x P`` (N, r) instead of x for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None, proj: LayerProjection = None, param=None):
        from ..core.functions import linear_forward_2d

        ops = ctx.ops
        x2, y = linear_forward_2d(ctx, x, weight, bias, residual)  # x2 (N, in), y (..., out)
        ctx.step = proj.controller.step
        z = ops.matmul(x2, proj.matrix(ops, ops.dtype(x2), ctx.step)) if ctx.needs_input_grad[1] else None  # (N, r)
        ctx.save(z, weight)  # x2 is not kept: it is freed once the layer's caller lets go of x
        ctx.proj, ctx.param = proj, param
        return y

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        z, weight = ctx.saved
        d_out, d_in = weight.shape
        g2 = ops.reshape(g, (-1, d_out))  # (N, out)
        need = ctx.needs_input_grad
        dx = ops.reshape(ops.matmul(g2, weight), ctx.lead + (d_in,)) if need[0] else None  # exact
        dw = None
        if need[1]:
            g_hat = ops.matmul(ops.transpose(g2, (1, 0)), z)  # (out, r)
            if ctx.proj.variant == "compressed" and ctx.param is not None:
                prev = getattr(ctx.param, "compact_grad", None)
                ctx.param.compact_grad = g_hat if prev is None else prev + g_hat
            else:
                p = ctx.proj.matrix(ops, ops.dtype(g_hat), ctx.step)  # (in, r), redrawn
                dw = ops.matmul(g_hat, ops.transpose(p, (1, 0)))  # (out, in) ≈ gᵀ x
        db = ops.sum(g2, axis=0) if len(need) > 2 and need[2] else None
        dr = g if len(need) > 3 and need[3] else None
        return dx, dw, db, dr


def compact_linear(x: Tensor, weight: Tensor, bias, residual, proj: LayerProjection) -> Tensor:
    """A Linear whose backward keeps ``x P`` instead of ``x`` (see the module docstring).

    With the compressed variant and a Parameter ``weight``, the weight's gradient goes to
    ``weight.compact_grad`` (d_out, r); otherwise it is the unbiased ``gᵀ x P Pᵀ``.
    """
    from ..nn.module import Parameter

    param = weight if isinstance(weight, Parameter) else None
    return CompActLinear.apply(x, weight, bias, residual, proj=proj, param=param)


class CompAct:
    """The CompAct state of one model: its compressed layers and the step that picks P.

    Made by :func:`enable_compact`. The :class:`~minidistill.train.Trainer` keeps ``step``
    equal to its own; a hand-written loop calls :meth:`advance` after each optimiser step.
    """

    def __init__(self, config: CompActConfig):
        self.config = config
        self.step = 0
        self.layers: list[tuple[str, object]] = []

    def advance(self) -> None:
        """One optimiser step done: the next forward may use a new P."""
        self.step += 1

    def saved_bytes_per_token(self, itemsize: int = 4) -> dict:
        """Bytes the compressed layers keep per token for backward: CompAct vs the plain input."""
        plain = sum(m.in_features for _, m in self.layers) * itemsize
        kept = sum(m.compact.rank for _, m in self.layers) * itemsize
        return {"plain": plain, "compact": kept, "ratio": kept / plain if plain else 1.0}


def enable_compact(model, config: CompActConfig | None = None, **kwargs) -> CompAct:
    """Compress the saved inputs of every Linear of ``model`` (except ``config.exclude``).

    Args:
        model: any minidistill model (BERT, students, WID, Theseus, MiniALBERT …).
        config: a :class:`CompActConfig` (or give its fields as keyword arguments).

    Returns:
        The :class:`CompAct` state (also at ``model.compact_state``).
    """
    from ..nn.layers import Linear
    from .wid import CompactedLinear

    config = config or CompActConfig(**kwargs)
    if getattr(model, "compact_state", None) is not None:
        raise ValueError("CompAct is already enabled on this model; call disable_compact first")
    state = CompAct(config)
    index = 0
    for name, module in model.named_modules():
        if not isinstance(module, (Linear, CompactedLinear)) or name.endswith(config.exclude):
            continue
        module.compact = LayerProjection(config, index, module.in_features, state)
        module.weight.compact = module.compact  # the optimiser maps compressed updates back with it
        state.layers.append((name, module))
        index += 1
    if not state.layers:
        raise ValueError("CompAct found no Linear layer to compress in this model")
    model.compact_state = state
    return state


def disable_compact(model) -> None:
    """Undo :func:`enable_compact`: every layer saves its full input again."""
    state = getattr(model, "compact_state", None)
    if state is None:
        return
    for _, module in state.layers:
        module.compact = None
        module.weight.compact = None
        module.weight.compact_grad = None
    model.compact_state = None


def saved_activation_bytes(output: Tensor, exclude=()) -> dict:
    """Bytes the tape behind ``output`` keeps for backward, by operation, each array once.

    Args:
        output: a tensor with a recorded graph (before ``backward``).
        exclude: tensors whose arrays are not activations (a model's parameters); weights
            referenced by a layer are not copies and cost nothing extra.

    Returns:
        ``{"total": bytes, "by_op": {Function name: bytes}}``.
    """
    from ..core.tensor import _topological_order, _itemsize

    skip = {_storage_key(t.data) for t in exclude}
    seen, total, by_op = set(), 0, {}
    for t in _topological_order(output):
        if t._node is None:
            continue
        fn, ctx, _ = t._node
        for a in ctx.saved:
            if a is None or not hasattr(a, "shape"):
                continue
            key = _storage_key(a)
            if key in skip or key in seen:  # views of one buffer (q, k, v read the same x) count once
                continue
            seen.add(key)
            n = _buffer_bytes(a, _itemsize)
            total += n
            by_op[fn.__name__] = by_op.get(fn.__name__, 0) + n
    return {"total": total, "by_op": by_op}


def compressed_direction_update(p, direction, lr: float) -> None:
    """``W ← W − lr · scale · direction Pᵀ`` for a compressed weight (in place, outside the tape).

    ``direction`` (d_out, r) is the optimiser's step in the compressed space (Adam's
    ``m̂ / (√v̂ + ε)`` or SGD's momentum buffer); P is the one the forward used.
    """
    ops = p.backend
    proj = p.compact
    pm = proj.matrix(ops, p.dtype)  # (in, r)
    p.data -= (lr * proj.config.scale) * ops.matmul(direction, ops.transpose(pm, (1, 0)))  # (out, in)


def _root(a):
    while getattr(a, "base", None) is not None and not hasattr(a, "untyped_storage"):
        a = a.base
    return a


def _storage_key(a):
    """One key per underlying buffer: views of the same memory share it."""
    if hasattr(a, "untyped_storage"):  # torch
        return ("torch", a.untyped_storage().data_ptr())
    return ("numpy", id(_root(a)))


def _buffer_bytes(a, itemsize) -> int:
    """Bytes of the buffer behind ``a`` (its base for a NumPy view)."""
    if hasattr(a, "untyped_storage"):
        return int(a.untyped_storage().nbytes())
    root = _root(a)
    return int(getattr(root, "nbytes", int(np.prod(a.shape)) * itemsize(a)))
