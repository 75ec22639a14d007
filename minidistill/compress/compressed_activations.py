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
  Parameter (``nn.Linear``); P is redrawn every ``update_proj_gap`` optimiser steps. The weight's
  ``grad`` holds Ĝ and its ``grad_basis`` is the layer's projection, whose ``lift(U) = scale · U Pᵀ``
  the optimisers apply (the low-rank-gradient hook of ``train/optim.py``).
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

How it plugs in, without the base layers knowing it: :func:`enable_compact` sets the
``linear_fn`` hook of every :class:`~minidistill.nn.LinearMap` (plain Linears and WID's
compacted ones alike) to the layer's :class:`LayerProjection`; :func:`callbacks` gives the
Trainer callbacks that enable it when training starts, keep P's step equal to the Trainer's
and disable it when training ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config_io import from_dict
from ..core import functions as F
from ..core.tensor import Tensor, is_grad_enabled
from ..nn.layers import LinearMap
from ..nn.module import Parameter
from .registry import DemoStep, Method, register

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
    """The projection of one layer: P for the current step, redrawn from its seed on demand.

    It is also the layer's ``linear_fn`` (see :class:`~minidistill.nn.LinearMap`): while the
    layer trains with gradients on, its forward saves ``x P``; otherwise it is the plain linear.
    """

    def __init__(self, config: CompActConfig, index: int, module, controller: "CompAct"):
        self.config, self.index, self.module, self.controller = config, index, module, controller
        self.d_in = module.in_features
        self.rank = min(config.rank, self.d_in)

    def __call__(self, x: Tensor, weight: Tensor, bias=None, residual=None) -> Tensor:
        """The layer's linear map: compressed while training with gradients, else plain."""
        if self.module.training and is_grad_enabled():
            return compact_linear(x, weight, bias, residual, self)
        return F.linear(x, weight, bias, residual)

    def lift(self, update):
        """An update in the (d_out, r) coordinates mapped back to the weight: ``scale · U Pᵀ``."""
        ops = self.module.weight.backend
        pm = self.matrix(ops, ops.dtype(update))  # (in, r): the P the forward used
        return self.config.scale * ops.matmul(update, ops.transpose(pm, (1, 0)))  # (out, in)

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


class CompActLinear(F.Linear):
    """``y = x Wᵀ + b (+ residual)`` that saves ``z = x P`` (N, r) instead of x for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None, proj: LayerProjection = None, param=None):
        ops = ctx.ops
        x2, y = F.linear_forward_2d(ctx, x, weight, bias, residual)  # x2 (N, in), y (..., out)
        ctx.step = proj.controller.step
        if ctx.back is not None:  # under autocast x2 is the low-precision copy; z is kept in float32
            x2 = ops.cast(x2, ctx.back)
        z = ops.matmul(x2, proj.matrix(ops, ops.dtype(x2), ctx.step)) if ctx.needs_input_grad[1] else None  # (N, r)
        ctx.save(z, weight)  # x2 is not kept: it is freed once the layer's caller lets go of x
        ctx.proj, ctx.param = proj, param
        return y

    @staticmethod
    def backward(ctx, g):
        ops = ctx.ops
        need = ctx.needs_input_grad
        # the input, bias and residual gradients need W, not x: they are the Linear's own
        ctx.needs_input_grad = (need[0], False) + tuple(need[2:])
        dx, _, db, dr = F.Linear.backward(ctx, g)
        ctx.needs_input_grad = need
        dw = None
        if need[1]:
            z, weight = ctx.saved
            g2 = ops.reshape(g, (-1, weight.shape[0]))  # (N, out)
            g_hat = ops.matmul(ops.transpose(g2, (1, 0)), z)  # (out, r) = ∇W P
            if ctx.proj.variant == "compressed" and ctx.param is not None:
                p = ctx.param  # the gradient stays in P's coordinates; the optimiser lifts the update
                p.grad = g_hat if p.grad is None else p.grad + g_hat
            else:
                pm = ctx.proj.matrix(ops, ops.dtype(g_hat), ctx.step)  # (in, r), redrawn
                dw = ops.matmul(g_hat, ops.transpose(pm, (1, 0)))  # (out, in) ≈ gᵀ x
        return dx, dw, db, dr


def compact_linear(x: Tensor, weight: Tensor, bias, residual, proj: LayerProjection) -> Tensor:
    """A Linear whose backward keeps ``x P`` instead of ``x`` (see the module docstring).

    With the compressed variant and a Parameter ``weight`` (whose ``grad_basis`` is ``proj``),
    the weight's gradient is Ĝ (d_out, r) in P's coordinates; otherwise it is the unbiased
    ``gᵀ x P Pᵀ``.
    """
    param = weight if isinstance(weight, Parameter) and getattr(weight, "grad_basis", None) is proj else None
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
        kept = sum(m.linear_fn.rank for _, m in self.layers) * itemsize
        return {"plain": plain, "compact": kept, "ratio": kept / plain if plain else 1.0}


def enable_compact(model, config: CompActConfig | None = None, **kwargs) -> CompAct:
    """Compress the saved inputs of every linear map of ``model`` (except ``config.exclude``).

    Args:
        model: any minidistill model (BERT, students, WID, Theseus, MiniALBERT …) or one layer.
        config: a :class:`CompActConfig` (or give its fields as keyword arguments).

    Returns:
        The :class:`CompAct` state (also at ``model.compact_state``).
    """
    config = config or CompActConfig(**kwargs)
    if getattr(model, "compact_state", None) is not None:
        raise ValueError("CompAct is already enabled on this model; call disable_compact first")
    state = CompAct(config)
    index = 0
    for name, module in model.named_modules():
        if not isinstance(module, LinearMap) or name.endswith(config.exclude):
            continue
        if module.linear_fn is not None:
            raise ValueError(f"layer {name or type(module).__name__} already has a linear_fn; CompAct cannot replace it")
        module.linear_fn = proj = LayerProjection(config, index, module, state)
        if config.variant == "compressed" and isinstance(module.effective()[0], Parameter):
            module.weight.grad_basis = proj  # the optimiser maps compressed updates back with it
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
        module.linear_fn = None
        if getattr(module.weight, "grad_basis", None) is not None:
            module.weight.grad_basis = None
            module.weight.grad = None  # a gradient in P's coordinates means nothing without P
    model.compact_state = None


def callbacks(config: CompActConfig | dict | None = None, **kwargs) -> dict:
    """Trainer callbacks that train with CompAct: ``Trainer(..., callbacks=callbacks(cfg))``.

    CompAct is enabled when training starts (unless the model already has it), P's step follows
    the Trainer's before every forward (so a resumed run draws the same P), and it is disabled
    when training ends, also after an error.
    """
    if isinstance(config, dict):
        config = from_dict(CompActConfig, config, "compressed_activations.")
    config = config or CompActConfig(**kwargs)
    mine = []

    def begin(trainer):
        if getattr(trainer.model, "compact_state", None) is None:
            mine.append(enable_compact(trainer.model, config))

    def step_begin(trainer):
        trainer.model.compact_state.step = trainer.state.step  # P is drawn from the step: resumable

    def exit_(trainer):
        if mine:
            disable_compact(trainer.model)
            mine.clear()

    return {"on_train_begin": [begin], "on_step_begin": [step_begin], "on_train_exit": [exit_]}


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


# ------------------------------------------------------------------- registry
def _demo(ctx):
    # low-rank updates move each weight within r directions at a time: a larger learning rate
    # than plain KD's (at 2e-4 the student stayed at the majority class for 100 steps; 1e-3: 92%)
    return [DemoStep("kd-2l-compact", "2-layer KD + label CE, compressed activations r 16", "distill",
                     {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                      "objectives": {"soft_kd": 1.0, "temperature": 2.0, "task": 1.0},
                      "compressed_activations": {"rank": 16}, "train": {"lr": 1e-3}}, cache=True)]


register(Method("compressed_activations", "CompAct: train with random projections of the Linear inputs saved for backward",
                role="training", settings=CompActConfig, callbacks=callbacks, demo=_demo, order=70))
