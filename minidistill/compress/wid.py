"""WID — Weight-Inherited Distillation.

Wu, Hou, Cao, Li, Hu, Xie: "Weight-Inherited Distillation for Task-Agnostic BERT
Compression", Findings of NAACL 2024. Instead of aligning a fresh student's outputs with the
teacher's, WID *inherits* the teacher's weights and learns which dimensions to drop.

Compactors. Every linear map ``y = W x + b`` (W: d_out × d_in) of the teacher gets a column
compactor C (d_in × d_in) and a row compactor R (d_out × d_out), both initialised to the
identity, so training starts from the teacher exactly::

    y = R (W (C x) + b),      effective weight R W C,  effective bias R b.

The embedding output gets one compactor C_e before its LayerNorm: ``LN(C_e (w + p + t))``.
A masked-LM model (the original's setting) keeps its head in the stream's width: the transform
``dense`` has compactors like any map and its LayerNorm is masked, and the decoder, tied to the
word table E, reads the words as the stream receives them::

    logits = h (E C_eᵀ)ᵀ + b,

so folding keeps the tie: the folded table ``E_s = E C_e[S, :]ᵀ`` is both the embedding and
the decoder of a plain ``BertForMaskedLM``.

Masks. Dimensions that must be pruned together share one mask: the residual stream (the
embedding compactor, the attention-output and FFN-output row compactors, the pooler, and
the column compactors of every map reading the stream), Q/K/V of one layer (rows of R_q,
R_k, R_v and columns of the attention output's C) and the FFN of one layer. Every
``w_step`` steps a round masks the kept dimensions with the smallest compactor norms
(‖row of R‖² + ‖column of C‖² over the group), growing the masked count by
``(size − target) / rounds`` until the target widths are reached; Q/K/V groups prune whole
heads (smallest summed norm) and the same number of dimensions inside every kept head.
Once a group has masked dimensions, LayerNorm mean and variance are taken over the kept
dimensions only.

Penalty. Masked compactor rows/columns and the LayerNorm entries tied to them are pushed to
zero while training goes on, so the kept dimensions can take over what the masked ones
carried. The original adds a scaled gradient and a push into Adam's first moment (λ = 20);
with the few hundred steps of a fine-tuning run we shrink the masked entries geometrically
instead, to 1% of their value within ``w_step`` steps (``decay``), then zero them and switch
the forward to hard masks one ``w_step`` after the last round (:meth:`WIDModel.harden`).

Fold. With kept index sets S (rows) and S' (columns)::

    W_s = R[S, :] · W · C[:, S'],   b_s = R[S, :] · b,   LN_s = (γ[S], β[S]),
    E_s = E · C_e[S, :]ᵀ  (word, position and token-type tables),

and, because a plain BERT scales attention scores by 1/√d with its own head size d, the
query weights and bias are multiplied by √(d_s / d) when heads lose dimensions. The result is
a plain BERT of the target widths whose outputs equal the hard-masked compacted model's.

Loss. The task loss, optionally with any distillation objective of :mod:`.kd` through
:func:`~minidistill.compress.distill` (the original trains with MLM only).

Conventions and departures, stated: LayerNorm keeps BERT's biased variance and eps inside
the square root (the original code divides by std + eps, which HF BERT does not); masks only
grow; the pre-masking L2 term on all compactors is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core import functions as F
from ..core.tensor import Tensor
from ..models.bert import BertModel, BertTaskModel
from ..nn.layers import LayerNorm, Linear, LinearMap
from ..nn.module import Module, Parameter
from ..train.optim import decay_groups
from .fold import build_like, clone, register_fold
from .registry import DemoStep, Method, register


# --------------------------------------------------------------------- config
@dataclass
class WIDConfig:
    """Target widths and the pruning schedule.

    Attributes:
        hidden_size, intermediate_size, num_attention_heads: the folded student's widths
            (None: keep the teacher's). ``hidden_size`` must split into whole heads.
        w_step: steps between pruning rounds.
        rounds: rounds to reach the targets (the original grows by 1/16 of the gap per round).
        start_step: steps of training before the first round.
        compactor_lr: compactor learning rate per unit of width: a d × d compactor trains at
            ``compactor_lr / d``. Adam moves each of its d² entries by about lr per step, and
            those moves add up coherently in the effective weight ``R W C``, which then moves
            by about lr · d; the division keeps that comparable across widths and with the
            inherited weights (which use the run's lr). Measured here: an undivided 5e-5 on
            MiniLM-L6's compactors wrecked the teacher in two steps.
        decay: per-step factor on masked entries (default: reach 1% within ``w_step`` steps).
    """

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    w_step: int = 500
    rounds: int = 16
    start_step: int = 0
    compactor_lr: float = 1e-4
    decay: float | None = None

    def __post_init__(self):
        if self.w_step < 1 or self.rounds < 1 or self.start_step < 0:
            raise ValueError(f"w_step and rounds must be ≥ 1 and start_step ≥ 0, got {self.w_step}, "
                             f"{self.rounds}, {self.start_step}")
        if self.decay is not None and not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {self.decay}")

    @property
    def step_decay(self) -> float:
        """The per-step shrink factor of masked entries."""
        return self.decay if self.decay is not None else 0.01 ** (1.0 / self.w_step)

    @property
    def hard_step(self) -> int:
        """The step at which masks become hard (one ``w_step`` after the last round)."""
        return self.start_step + (self.rounds + 1) * self.w_step


class MaskGroup:
    """Dimensions pruned together: the residual stream, one layer's Q/K/V, one layer's FFN.

    ``keep`` is a 0/1 float vector; masks only grow. A Q/K/V group knows its head layout
    (``heads`` × ``size // heads``) and its head and per-head targets."""

    def __init__(self, name: str, size: int, target: int, heads: int | None = None, target_heads: int | None = None):
        self.name, self.size, self.target = name, size, target
        self.heads, self.target_heads = heads, target_heads
        self.keep = np.ones(size)  # (size,)
        self.members: list = []  # (module, role) pairs whose compactors carry this group's norms

    @property
    def active(self) -> bool:
        """True once any dimension is masked."""
        return bool((self.keep == 0).any())

    def kept(self) -> np.ndarray:
        """Indices of the kept dimensions, ascending."""
        return np.flatnonzero(self.keep)

    def norms(self) -> np.ndarray:
        """‖rows of R‖² + ‖columns of C‖² summed over the group's compactors, per dimension."""
        total = np.zeros(self.size)
        for module, role in self.members:
            total += module.compactor_norms(role)
        return total

    def prune_round(self, r: int, rounds: int) -> None:
        """Grow the mask to round ``r`` of ``rounds`` (the targets exactly at ``r == rounds``)."""
        frac = min(r, rounds) / rounds
        norms = self.norms()
        if self.heads is None:
            want = math.ceil(frac * (self.size - self.target))
            order = [i for i in np.argsort(norms, kind="stable") if self.keep[i]]
            for i in order[: max(0, want - int((self.keep == 0).sum()))]:
                self.keep[i] = 0.0
            return
        h, d = self.heads, self.size // self.heads
        d_target = self.target // self.target_heads
        keep = self.keep.reshape(h, d)  # (H, d), a view
        alive = keep.any(1)
        want_heads = math.ceil(frac * (h - self.target_heads))
        head_norm = (norms.reshape(h, d) * keep).sum(1)
        order = [i for i in np.argsort(head_norm, kind="stable") if alive[i]]
        for i in order[: max(0, want_heads - int((~alive).sum()))]:
            keep[i] = 0.0
        want_dims = math.ceil(frac * (d - d_target))
        for i in np.flatnonzero(keep.any(1)):
            row = norms.reshape(h, d)[i]
            order = [j for j in np.argsort(row, kind="stable") if keep[i, j]]
            for j in order[: max(0, want_dims - int((keep[i] == 0).sum()))]:
                keep[i, j] = 0.0

    def __repr__(self):
        return f"MaskGroup({self.name}: {int(self.keep.sum())}/{self.size} kept, target {self.target})"


class _State:
    """Flags shared by every compacted module of one model."""

    def __init__(self):
        self.hard = False


def _eye(like: Parameter, n: int) -> Parameter:
    return Parameter(np.eye(n), backend=like.backend, dtype=like.dtype.name)


def _host(p) -> np.ndarray:
    return p.numpy().astype(np.float64)


# -------------------------------------------------------------------- modules
class CompactedLinear(LinearMap):
    """A Linear between compactors: ``y = R (W (C x) + b)``, weights named as the Linear's
    plus ``col_compactor`` (C, in × in) and ``row_compactor`` (R, out × out)."""

    def __init__(self, linear: Linear, in_group: MaskGroup | None, out_group: MaskGroup | None, state: _State,
                 role: str = ""):
        self.in_features, self.out_features, self.role = linear.in_features, linear.out_features, role
        self.weight, self.bias = linear.weight, linear.bias
        self.col_compactor = _eye(linear.weight, self.in_features) if in_group is not None else None
        self.row_compactor = _eye(linear.weight, self.out_features) if out_group is not None else None
        self.in_group, self.out_group, self.state = in_group, out_group, state
        for group, kind in ((in_group, "col"), (out_group, "row")):
            if group is not None:
                group.members.append((self, kind))

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """The effective weight ``R W C`` (out, in) and bias ``R b`` (out,); once the masks
        are hard, masked columns of C and rows of R count as zero."""
        # BEGIN TASK 5.1
        w, b = self.weight, self.bias
        if self.col_compactor is not None:
            c = self.col_compactor
            if self.state.hard:
                c = c * self.in_group.keep[None, :]  # (in, in): masked columns zero
            w = F.matmul(w, c)  # (out, in)
        if self.row_compactor is not None:
            r = self.row_compactor
            if self.state.hard:
                r = r * self.out_group.keep[:, None]  # (out, out): masked rows zero
            w = F.matmul(r, w)  # (out, in)
            if b is not None:
                b = F.matmul(r, b.reshape(self.out_features, 1)).reshape(self.out_features)  # (out,)
        return w, b
        # END TASK 5.1

    def compactor_norms(self, kind: str) -> np.ndarray:
        """Squared norms: rows of R (``"row"``) or columns of C (``"col"``)."""
        if kind == "row":
            return (_host(self.row_compactor) ** 2).sum(1)
        return (_host(self.col_compactor) ** 2).sum(0)

    def shrink_masked(self, factor: float) -> None:
        """Multiply the masked rows of R and columns of C by ``factor`` (in place)."""
        if self.row_compactor is not None and self.out_group.active:
            _scale(self.row_compactor, (1.0 - self.out_group.keep)[:, None], factor)
        if self.col_compactor is not None and self.in_group.active:
            _scale(self.col_compactor, (1.0 - self.in_group.keep)[None, :], factor)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, role={self.role}"


class WIDLayerNorm(Module):
    """LayerNorm on a masked residual stream: statistics over kept dimensions once masking
    has started. The embeddings' one also carries the embedding compactor (``compactor``)."""

    def __init__(self, ln: LayerNorm, group: MaskGroup, state: _State, compactor: bool = False):
        self.normalized_shape, self.eps = ln.normalized_shape, ln.eps
        self.compactor = _eye(ln.weight, ln.normalized_shape) if compactor else None
        self.weight, self.bias = ln.weight, ln.bias
        self.group, self.state = group, state
        if compactor:
            group.members.append((self, "row"))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (..., D) over the kept dimensions."""
        keep = self.group.keep
        if self.compactor is not None:
            c = self.compactor * keep[:, None] if self.state.hard else self.compactor  # (D, D)
            x = F.linear(x, c)  # (..., D): C_e x
        w, b = self.weight, self.bias
        if self.state.hard:
            w, b = w * keep, b * keep  # (D,)
        if not self.group.active:
            return F.layer_norm(x, w, b, self.eps)
        inv_k = 1.0 / float(keep.sum())
        mean = F.sum(x * keep, axis=-1, keepdims=True) * inv_k  # (..., 1)
        xc = x - mean  # (..., D)
        var = F.sum(xc * xc * keep, axis=-1, keepdims=True) * inv_k  # (..., 1)
        return xc / F.sqrt(var + self.eps) * w + b

    def compactor_norms(self, kind: str) -> np.ndarray:
        """Squared row norms of the embedding compactor."""
        return (_host(self.compactor) ** 2).sum(1)

    def shrink_masked(self, factor: float) -> None:
        """Shrink the masked γ, β entries (and compactor rows) by ``factor`` (in place)."""
        if not self.group.active:
            return
        masked = 1.0 - self.group.keep
        _scale(self.weight, masked, factor)
        _scale(self.bias, masked, factor)
        if self.compactor is not None:
            _scale(self.compactor, masked[:, None], factor)

    def extra_repr(self):
        return f"{self.normalized_shape}, group={self.group.name}"


class CompactedDecoder(Module):
    """The masked-LM decoder tied to compacted word embeddings: the embeddings enter the stream
    as ``C_e e_v``, so the tied decoder's weight is ``E C_eᵀ`` (V, D) and its logits
    ``h (E C_eᵀ)ᵀ + b``; folding keeps the tie (``E_s = E C_e[S, :]ᵀ`` is both)."""

    def __init__(self, decoder: Linear, embeddings_ln: WIDLayerNorm, state: _State):
        self.weight, self.bias = decoder.weight, decoder.bias  # (V, D) the word table itself, (V,)
        self.embeddings_ln, self.state = embeddings_ln, state

    def forward(self, h: Tensor) -> Tensor:
        """(…, D) → logits (…, V)."""
        c = self.embeddings_ln.compactor  # (D, D)
        if self.state.hard:
            c = c * self.embeddings_ln.group.keep[:, None]
        w = F.matmul(self.weight, F.transpose(c))  # (V, D): every word as the stream sees it
        return F.linear(h, w, self.bias)  # (…, V)

    def extra_repr(self):
        return f"tied to the word embeddings through the embedding compactor, vocab={self.weight.shape[0]}"


def _scale(p: Parameter, where: np.ndarray, factor: float) -> None:
    """``p ← p · factor`` where ``where`` is 1, unchanged elsewhere (in place, off the tape)."""
    mult = 1.0 - (1.0 - factor) * np.broadcast_to(where, p.shape)
    p.data = p.data * p.backend.asarray(mult, dtype=p.dtype.name)


# ---------------------------------------------------------------------- model
class WIDModel(Module):
    """A BERT with compactors around every linear map, masks and the pruning schedule.

    Args:
        teacher: a BERT task model (any head) or a ``BertModel`` (not modified: the
            WID model works on a copy and inherits its weights).
        config: a :class:`WIDConfig` with the target widths and the schedule.

    The forward is the teacher's (same arguments and outputs); with identity compactors and
    no masks it equals the teacher exactly. Train it with the :class:`~minidistill.train.Trainer`
    or :func:`~minidistill.compress.distill` and ``callbacks=wid.callbacks()``; then
    ``minidistill.fold(wid)`` gives the plain smaller BERT.
    """

    def __init__(self, teacher, config: WIDConfig | None = None):
        if not isinstance(teacher, (BertTaskModel, BertModel)):
            raise TypeError("WID compacts a BERT task model (sentence, token, QA or masked-LM head) or a BertModel, got "
                            f"{type(teacher).__name__}")
        self.wid_config = cfg = config or WIDConfig()
        tc = teacher.config
        h, d_ffn, heads = tc.hidden_size, tc.intermediate_size, tc.num_attention_heads
        t_hidden = cfg.hidden_size or h
        t_ffn = cfg.intermediate_size or d_ffn
        t_heads = cfg.num_attention_heads or heads
        for name, want, have in (("hidden_size", t_hidden, h), ("intermediate_size", t_ffn, d_ffn),
                                 ("num_attention_heads", t_heads, heads)):
            if not 1 <= want <= have:
                raise ValueError(f"WID target {name}={want} must lie in [1, {have}] (the teacher's)")
        if t_hidden % t_heads:
            raise ValueError(f"WID target hidden_size {t_hidden} does not split into {t_heads} heads")
        if t_hidden // t_heads > h // heads:
            raise ValueError(f"WID target head size {t_hidden // t_heads} exceeds the teacher's {h // heads}: "
                             f"use at least {math.ceil(t_hidden / (h // heads))} heads")
        self.model = clone(teacher)
        self.state = _State()
        res = MaskGroup("residual", h, t_hidden)
        self.groups = {"residual": res}
        bert = self.model.bert if isinstance(self.model, BertTaskModel) else self.model
        st = self.state
        emb = bert.embeddings
        emb.LayerNorm = WIDLayerNorm(emb.LayerNorm, res, st, compactor=True)
        for i, layer in enumerate(bert.encoder.layer):
            qkv = self.groups[f"qkv.{i}"] = MaskGroup(f"qkv.{i}", h, t_hidden, heads, t_heads)
            ffn = self.groups[f"ffn.{i}"] = MaskGroup(f"ffn.{i}", d_ffn, t_ffn)
            att = getattr(layer.attention, "self")
            for role in ("query", "key", "value"):
                setattr(att, role, CompactedLinear(getattr(att, role), res, qkv, st, role))
            out = layer.attention.output
            out.dense = CompactedLinear(out.dense, qkv, res, st, "attention.output")
            out.LayerNorm = WIDLayerNorm(out.LayerNorm, res, st)
            layer.intermediate.dense = CompactedLinear(layer.intermediate.dense, res, ffn, st, "intermediate")
            layer.output.dense = CompactedLinear(layer.output.dense, ffn, res, st, "output")
            layer.output.LayerNorm = WIDLayerNorm(layer.output.LayerNorm, res, st)
        if bert.pooler is not None:
            bert.pooler.dense = CompactedLinear(bert.pooler.dense, res, res, st, "pooler")
        if isinstance(self.model, BertTaskModel):  # the head reads the residual stream, whatever the task
            for name in self.model.head_linears:
                setattr(self.model, name, CompactedLinear(getattr(self.model, name), res, None, st, name))
        if getattr(self.model, "kind", None) == "mlm":  # the transform stays in the stream's width
            pred = self.model.cls.predictions
            pred.transform.dense = CompactedLinear(pred.transform.dense, res, res, st, "cls.transform")
            pred.transform.LayerNorm = WIDLayerNorm(pred.transform.LayerNorm, res, st)
            pred.decoder = CompactedDecoder(pred.decoder, emb.LayerNorm, st)
        self.history: list[dict] = []

    # ----------------------------------------------------------- the model
    @property
    def config(self):
        """The teacher's (full-width) config."""
        return self.model.config

    def forward(self, *args, **kwargs):
        """The compacted model's forward (the teacher's signature and outputs)."""
        return self.model(*args, **kwargs)

    def layer_groups(self) -> list:
        """The wrapped model's layer groups (for gradual unfreezing)."""
        return self.model.layer_groups()

    def compactor_parameters(self) -> list[Parameter]:
        """Every compactor."""
        return [p for name, p in self.named_parameters() if name.endswith("compactor")]

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups: compactors of size d at ``compactor_lr / d`` without decay (one
        group per size); inherited weights at the run's lr (decayed weights, then biases and
        LayerNorm parameters)."""
        named = list(self.named_parameters())
        by_size: dict[int, list] = {}
        for name, p in named:
            if p.requires_grad and name.endswith("compactor"):
                by_size.setdefault(p.shape[0], []).append(p)
        groups = [{"params": ps, "lr": self.wid_config.compactor_lr / d, "weight_decay": 0.0}
                  for d, ps in sorted(by_size.items())]
        inherited = [(name, p) for name, p in named if not name.endswith("compactor")]
        return groups + decay_groups(inherited, weight_decay)

    # ------------------------------------------------------------ schedule
    def widths(self) -> dict:
        """Kept dimensions per group."""
        return {name: int(g.keep.sum()) for name, g in self.groups.items()}

    def prune_round(self, r: int) -> None:
        """Run pruning round ``r`` (1-based) on every group."""
        for g in self.groups.values():
            g.prune_round(r, self.wid_config.rounds)

    def prune_to_target(self) -> None:
        """Mask straight to the target widths by the current compactor norms."""
        self.prune_round(self.wid_config.rounds)

    def finish_schedule(self) -> str | None:
        """Before folding: if training ended before the last pruning round, mask to the targets
        now (and say so); None when the schedule was finished."""
        if self.state.hard:
            return None
        self.prune_to_target()
        return "WID: the run ended before the last pruning round; masked to the targets now"

    def shrink_masked(self, factor: float | None = None) -> None:
        """One penalty step: masked entries times ``factor`` (default: the config's decay)."""
        factor = self.wid_config.step_decay if factor is None else factor
        for m in self.modules():
            if isinstance(m, (CompactedLinear, WIDLayerNorm)):
                m.shrink_masked(factor)

    def harden(self) -> float:
        """Zero every masked entry and apply the masks in the forward from now on.

        Returns the largest absolute value that was zeroed."""
        residual = self.masked_residual()
        self.shrink_masked(0.0)
        self.state.hard = True
        return residual

    def masked_residual(self) -> float:
        """The largest absolute masked entry still in the model (0 once hardened)."""
        worst = 0.0
        for m in self.modules():
            if isinstance(m, CompactedLinear):
                if m.row_compactor is not None and m.out_group.active:
                    worst = max(worst, np.abs(_host(m.row_compactor)[m.out_group.keep == 0]).max())
                if m.col_compactor is not None and m.in_group.active:
                    worst = max(worst, np.abs(_host(m.col_compactor)[:, m.in_group.keep == 0]).max())
            elif isinstance(m, WIDLayerNorm) and m.group.active:
                masked = m.group.keep == 0
                worst = max(worst, np.abs(_host(m.weight)[masked]).max(), np.abs(_host(m.bias)[masked]).max())
                if m.compactor is not None:
                    worst = max(worst, np.abs(_host(m.compactor)[masked]).max())
        return float(worst)

    def on_step(self, step: int) -> None:
        """The schedule at training step ``step`` (after the optimiser step): shrink masked
        entries; every ``w_step`` steps a pruning round; harden after the last round."""
        cfg = self.wid_config
        # before hardening: the penalty; after: keep masked entries exactly zero (the optimiser's
        # momentum would otherwise move them, although the forward no longer reads them)
        self.shrink_masked(0.0 if self.state.hard else None)
        k = step - cfg.start_step
        if k > 0 and k % cfg.w_step == 0:
            r = k // cfg.w_step
            if r <= cfg.rounds:
                self.prune_round(r)
                self.history.append({"step": step, "round": r, **self.widths(),
                                     "residual_norms": self.groups["residual"].norms().tolist()})
            elif r == cfg.rounds + 1 and not self.state.hard:
                self.harden()

    def training_state(self) -> dict:
        """What a training checkpoint needs beyond the parameters: the masks, whether they are
        hard, and the pruning history (JSON)."""
        return {"keep": {k: g.keep.tolist() for k, g in self.groups.items()}, "hard": self.state.hard,
                "history": self.history}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""
        for k, g in self.groups.items():
            g.keep = np.asarray(state["keep"][k], dtype=np.float64)
        self.state.hard = bool(state["hard"])
        self.history = list(state["history"])

    def callbacks(self) -> dict:
        """Trainer callbacks that run the schedule: ``Trainer(..., callbacks=wid.callbacks())``."""
        return {"on_step_end": [lambda trainer: self.on_step(trainer.state.step)]}


# ------------------------------------------------------------------------ fold
def _uniform(groups: list[MaskGroup], what: str) -> int:
    sizes = {int(g.keep.sum()) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"fold: the {what} widths differ between layers ({sorted(sizes)}); run the pruning "
                         "schedule to the end (or WIDModel.prune_to_target()) before folding")
    return sizes.pop()


@register_fold(WIDModel)
def _fold_wid(wid: WIDModel, report) -> Module:
    """A plain BERT of the kept widths (see the module docstring for the identities)."""
    n = wid.config.num_hidden_layers
    qkv_groups = [wid.groups[f"qkv.{i}"] for i in range(n)]
    hidden = int(wid.groups["residual"].keep.sum())
    ffn = _uniform([wid.groups[f"ffn.{i}"] for i in range(n)], "FFN")
    _uniform(qkv_groups, "Q/K/V")
    heads_full, d_full = qkv_groups[0].heads, qkv_groups[0].size // qkv_groups[0].heads
    layout = set()
    for g in qkv_groups:
        per_head = g.keep.reshape(heads_full, d_full).sum(1)
        alive = per_head[per_head > 0]
        layout.add((len(alive), tuple(sorted(set(alive.astype(int))))))
    if len(layout) != 1 or len(next(iter(layout))[1]) != 1:
        raise ValueError(f"fold: kept heads must be whole and equal in size in every layer, got {sorted(layout)}")
    heads, (d_s,) = next(iter(layout))
    if heads * d_s != hidden:
        raise ValueError(f"fold: {heads} heads × {d_s} dims ≠ hidden {hidden}: a plain BERT needs heads × head size "
                         "= hidden size; prune with targets that satisfy it")
    report.residual(wid.masked_residual() if not wid.state.hard else 0.0)
    q_scale = math.sqrt(d_s / d_full)
    model = wid.model
    params = dict(model.named_parameters(remove_duplicate=False))
    state = {}
    for path, m in model.named_modules():
        if isinstance(m, CompactedLinear):
            w, b = _host(m.weight), None if m.bias is None else _host(m.bias)
            if m.col_compactor is not None:
                w = w @ _host(m.col_compactor)[:, m.in_group.kept()]  # (out, in_s)
            if m.row_compactor is not None:
                r = _host(m.row_compactor)[m.out_group.kept()]  # (out_s, out)
                w = r @ w  # (out_s, in_s)
                b = None if b is None else r @ b  # (out_s,)
            if m.role == "query":
                w, b = w * q_scale, b * q_scale
            state[f"{path}.weight"] = w
            if b is not None:
                state[f"{path}.bias"] = b
        elif isinstance(m, WIDLayerNorm):
            kept = m.group.kept()
            state[f"{path}.weight"], state[f"{path}.bias"] = _host(m.weight)[kept], _host(m.bias)[kept]
            if m.compactor is not None:
                c = _host(m.compactor)[kept]  # (D_s, D)
                emb = path.rsplit(".", 1)[0]
                for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
                    key = f"{emb}.{table}.weight"
                    state[key] = _host(params[key]) @ c.T  # (V, D_s)
    if getattr(model, "kind", None) == "mlm":  # the decoder is the folded word table; its bias stays
        state["cls.predictions.bias"] = _host(model.cls.predictions.bias)
    cfg = model.config.replace(hidden_size=hidden, intermediate_size=ffn, num_attention_heads=heads,
                               extra=dict(model.config.extra))
    return build_like(model, cfg, state)


# ------------------------------------------------------------------- registry
@dataclass
class WIDSettings:
    """WID's pruning schedule (the target widths are the student's ``hidden_size``,
    ``num_attention_heads`` and ``intermediate_size``)."""

    rounds: int = 16  # pruning rounds
    w_step: int | None = None  # steps between rounds (default: hard masks at 80% of the run)
    compactor_lr: float = 1e-4  # the compactors' rate per unit width (a d × d compactor: lr / d)


def _build(teacher, student, settings: WIDSettings, total_steps):
    w_step = settings.w_step or max(1, int(0.8 * total_steps / (settings.rounds + 1)))
    return WIDModel(teacher, WIDConfig(hidden_size=student.hidden_size, intermediate_size=student.intermediate_size,
                                       num_attention_heads=student.num_attention_heads, w_step=w_step,
                                       rounds=settings.rounds, compactor_lr=settings.compactor_lr))


def _demo(ctx):
    if ctx.preset == "quick":  # its pruning schedule needs more steps than the quick tour has
        return []
    steps = {"tiny": 4, "default": 120}.get(ctx.preset)  # full: the students' epochs
    return [DemoStep("wid-192", "WID half width, folded", "distill",
                     {"student": {"kind": "wid", "hidden_size": 192, "num_attention_heads": 6, "intermediate_size": 768},
                      "objectives": {"soft_kd": 1.0, "temperature": 2.0},
                      "train": {"max_steps": steps} if steps else {}}, cache=True)]


register(Method("wid", "Weight-Inherited Distillation: compactors pruned to the target widths, folded",
                settings=WIDSettings, build=_build, folds=True, keep_last=True, demo=_demo, order=30))
