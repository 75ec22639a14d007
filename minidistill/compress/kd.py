"""Knowledge-distillation objectives and layer maps.

Implements the objective families compared in "How to Distill your BERT: An Empirical Study
on the Impact of Weight Initialisation and Distillation Objectives" (Wang, Weissweiler,
Schütze, Plank, ACL 2023), on every backend. With student s and teacher t:

* soft KD (Hinton et al. 2015):   L = T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))
* hard KD:                        L = CE(z_s, argmax z_t)   (optionally where max p_t ≥ τ)
* logit MSE:                      L = mean (z_s − z_t)²
* hidden-state MSE / cosine:      L = Σ_(i,j)∈map  mean_tokens ‖W h_s^i − h_t^j‖² / D  (or 1 − cos)
* attention-score MSE (TinyBERT): L = Σ_(i,j)∈map  mean_(real q,k) (A_s^i − A_t^j)²  on pre-softmax scores
* attention KL (MobileBERT/MiniLM): L = Σ_(i,j)∈map  mean_(b,h,real q) Σ_k p_t log(p_t / p_s)
* MiniLM value relation:          R = softmax(V Vᵀ / √d) per head;  L = KL(R_t ‖ R_s), as attention KL
* pooled representation (XtremeDistil): L = ‖W r_s − r_t‖² / D  (or 1 − cos) on the pooled
  [CLS] vectors (a BiLSTM student's max-pooled, projected state)
* MiniLMv2 relations (Q-Q, K-K, V-V): the heads' concatenation X (B, T, D) is split into R
  "relation heads" on both models, R = softmax(X_r X_rᵀ / √(D / R)), so head counts may differ

Conventions chosen where the original repositories disagree (each is tested):

* KL is **batch-mean**: summed over classes (or keys) and divided by the number of
  distributions (examples, or batch × heads × real query positions); not element-mean.
* Soft KD is multiplied by T², so its gradient scale does not depend on T:
  ∂L/∂z_s = T · (softmax(z_s/T) − softmax(z_t/T)) / B.
* Padding is **excluded**: hidden losses average over real tokens only; attention losses use
  only real query rows and real key columns (not the −100 clipping of scores some repos use).
  Padded positions change nothing.
* Logit objectives work on every head (:func:`logit_distributions`): sentence logits (B, C)
  per example; token logits (B, T, C) per word — the first sub-word of each word
  (``batch["token_mask"]``), never padding, [CLS]/[SEP] or later sub-words; QA start and end
  logits (B, T) as one distribution per example over the window's real tokens, the start and
  end terms averaged.
* Attention-score MSE is on the **pre-softmax** (scaled) scores; attention KL on the
  post-softmax distributions, with the student's log-probabilities taken by a masked
  log-softmax of its scores (so masked keys carry no gradient and no NaN).
* Hidden losses sum over **every** mapped layer pair (one original repo kept only the last
  layer's term: a bug) and use the logits themselves, never ``log(p / (1 − p))``.
* When widths differ, a learned linear projection maps student states to the teacher width.

Layer maps use hidden-state indices (0 = embeddings, i = output of layer i) for hidden
losses and layer indices (0 … L−1) for attention losses. The learned ``combine`` map
(hidden losses only) matches every student layer i to a learned mixture of all teacher
layers, ``Σ_j softmax(α_i)_j h_t^j`` (α initialised to zero: the plain average); the softmax
keeps each row a convex combination, so the map cannot shrink the targets towards zero. This
is ours: How to Distill's code projects the concatenated teacher layers linearly,
``W_i [h_t^1; …; h_t^L] + b_i`` — the ``combine-linear`` map (W_i starts as the average), whose
targets the projection can shrink as it learns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core import functions as F
from ..core.tensor import Tensor, autocast
from ..nn.layers import Linear
from ..nn.module import Module


# ------------------------------------------------------------------ layer maps
@dataclass(frozen=True)
class LayerMap:
    """Pairs ``(student index, teacher index)``, validated against both models' depths.

    ``kind`` says what the indices count: ``"hidden"`` (hidden states 0 … L, 0 = embeddings)
    or ``"attention"`` (layers 0 … L−1).
    """

    pairs: tuple
    n_student: int
    n_teacher: int
    kind: str = "hidden"
    combine: bool = False
    combine_kind: str = "softmax"  # with combine: "softmax" mixture (ours) or "linear" projection (How to Distill's)

    def __post_init__(self):
        if self.kind not in ("hidden", "attention"):
            raise ValueError(f"LayerMap kind must be 'hidden' or 'attention', got {self.kind!r}")
        if self.combine and self.kind != "hidden":
            raise ValueError("the learned 'combine' map is for hidden-state losses only")
        top_s = self.n_student + (1 if self.kind == "hidden" else 0)
        top_t = self.n_teacher + (1 if self.kind == "hidden" else 0)
        what = "hidden states 0.." if self.kind == "hidden" else "layers 0.."
        if not self.pairs:
            raise ValueError("a LayerMap needs at least one (student, teacher) pair")
        for s, t in self.pairs:
            if not 0 <= s < top_s:
                raise ValueError(f"LayerMap: student index {s} does not exist (the student has {what}{top_s - 1})")
            if not 0 <= t < top_t:
                raise ValueError(f"LayerMap: teacher index {t} does not exist (the teacher has {what}{top_t - 1})")

    @classmethod
    def build(cls, spec, n_student: int, n_teacher: int, kind: str = "hidden") -> "LayerMap":
        """A map from a name or a list.

        * ``"uniform"``: student i ↔ teacher i·k where k = L_t / L_s (hidden states), or the
          last layer of each block of k (attention);
        * ``"skip"``: the same as uniform for hidden states (teacher 0,4,8,12 → student 0..3);
        * ``"layers"``: uniform without the embedding pair (0, 0) — layer outputs only, student
          state l ↔ teacher state l·k for l ≥ 1, which in layer indices is l ↔ k(l + 1) − 1
          (MiniALBERT's l ↔ 2l + 1); for attention maps the same as uniform;
        * ``"last"``: only the last state / layer of each model;
        * ``"combine"`` (hidden states): every student layer 1 … L_s against a learned
          mixture of teacher layers 1 … L_t (see the module docstring);
        * ``"combine-linear"``: the same pairs against a learned linear projection of the
          concatenated teacher layers (How to Distill's original);
        * a list: student i ↔ teacher ``spec[i]``, over the student's states (hidden maps
          include the embeddings when the list has L_s + 1 entries).
        """
        if isinstance(spec, LayerMap):
            return spec
        hidden = kind == "hidden"
        if isinstance(spec, (list, tuple)):
            start = 0 if (not hidden or len(spec) == n_student + 1) else 1
            return cls(tuple((i + start, int(t)) for i, t in enumerate(spec)), n_student, n_teacher, kind)
        if spec in ("uniform", "skip", "layers"):
            if n_teacher % n_student:
                raise ValueError(f"a {spec} map needs the teacher depth ({n_teacher}) to be a multiple of the "
                                 f"student depth ({n_student}); give an explicit list instead")
            k = n_teacher // n_student
            if hidden:
                pairs = tuple((i, i * k) for i in range(0 if spec != "layers" else 1, n_student + 1))
            else:
                pairs = tuple((i, (i + 1) * k - 1) for i in range(n_student))
            return cls(pairs, n_student, n_teacher, kind)
        if spec in ("combine", "combine-linear"):
            if not hidden:
                raise ValueError("the learned 'combine' map is for hidden-state losses only")
            pairs = tuple((i, j) for i in range(1, n_student + 1) for j in range(1, n_teacher + 1))
            return cls(pairs, n_student, n_teacher, kind, combine=True,
                       combine_kind="linear" if spec == "combine-linear" else "softmax")
        if spec == "last":
            pairs = ((n_student, n_teacher),) if hidden else ((n_student - 1, n_teacher - 1),)
            return cls(pairs, n_student, n_teacher, kind)
        raise ValueError(f"unknown layer map {spec!r}: use 'uniform', 'skip', 'layers', 'last', 'combine', "
                         "'combine-linear' or a list of teacher indices")

    @property
    def student_indices(self) -> tuple:
        """The student indices the map uses, in order, each once."""
        return tuple(dict.fromkeys(s for s, _ in self.pairs))

    def teacher_indices(self, student_index: int) -> tuple:
        """The teacher indices paired with ``student_index``."""
        return tuple(t for s, t in self.pairs if s == student_index)


# ------------------------------------------------------------------- helpers
def _const(x, like: Tensor) -> Tensor:
    """Teacher outputs enter as constants on the student's backend (no gradient)."""
    data = x.data if isinstance(x, Tensor) else x
    ops = like.backend
    return Tensor._wrap(ops.asarray(ops.to_numpy(data) if not ops.is_array(data) else data, dtype=like.dtype), ops)


def _token_mask(batch, like: Tensor):
    """(B, T) float mask of real tokens, on ``like``'s backend."""
    m = batch.get("attention_mask") if batch is not None else None
    if m is None:
        b, t = like.shape[0], like.shape[1]
        m = np.ones((b, t))
    return like.backend.asarray(np.asarray(m), dtype=like.dtype)


# ---------------------------------------------------------------- objectives
class Objective:
    """A weighted distillation loss: ``objective(student_out, teacher_out, batch) -> Tensor``.

    ``needs`` lists the model outputs it reads (``logits``, ``hidden_states``,
    ``attentions``, ``attention_scores``), so a runner asks the models only for those.
    Objectives with learned parts (projections) are Modules: train their parameters too.
    """

    needs: tuple = ()
    weight: float = 1.0
    name: str = "objective"  # the loss term's name in logs (the CLI's key)

    def loss(self, student_out, teacher_out, batch) -> Tensor:  # pragma: no cover - interface
        """The unweighted loss."""
        raise NotImplementedError

    def __call__(self, student_out, teacher_out, batch=None) -> Tensor:
        return self.loss(student_out, teacher_out, batch) * self.weight


def _as_rows(x: Tensor, m):
    """Distributions along the last axis and a mask of the counted ones: (…, C) → (N, C), (N, 1)."""
    c = x.shape[-1]
    return x.reshape(-1, c), m.reshape(-1, 1)


def logit_distributions(student_out, teacher_out, batch):
    """The distributions a logit objective compares, as ``(s, t, rows, keys)`` tuples: student
    logits (N, K), teacher logits (N, K) (constants), ``rows`` (N, 1) the distributions that
    count (1) and ``keys`` (N, K) the entries each one ranges over (None: all).

    * sentence logits (B, C): every example, over the C classes;
    * token logits (B, T, C): the positions of ``batch["token_mask"]`` (each word's first
      sub-word; without one, every real token), over the C tags;
    * QA (``start_logits`` / ``end_logits`` (B, T)): one distribution per example and per end,
      over the real tokens of the window.

    Padding never counts, so padding a batch further changes no loss and no gradient.
    """
    start = getattr(student_out, "start_logits", None)
    if start is not None:  # extractive QA: distributions over positions
        ops = start.backend
        keys = Tensor._wrap(_token_mask(batch, start), ops)  # (B, T)
        rows = ops.asarray(np.ones((start.shape[0], 1)), dtype=start.dtype)  # (B, 1)
        t_logits = getattr(teacher_out, "logits", None)  # (B, T, 2), when start / end come from a cache
        out = []
        for k, name in enumerate(("start_logits", "end_logits")):
            t = getattr(teacher_out, name, None)
            if t is None:
                t = ops.to_numpy(t_logits.data if isinstance(t_logits, Tensor) else t_logits)[..., k]
            out.append((getattr(student_out, name), _const(t, start), Tensor._wrap(rows, ops), keys))
        return out
    s = student_out.logits  # (B, C) or (B, T, C)
    t = _const(teacher_out.logits, s)
    if s.shape != t.shape:
        raise ValueError(f"student logits {s.shape} and teacher logits {t.shape} differ in shape")
    ops = s.backend
    if len(s.shape) == 3:  # token classification
        m = batch.get("token_mask") if batch is not None else None
        rows = ops.asarray(np.asarray(m), dtype=s.dtype) if m is not None else _token_mask(batch, s)  # (B, T)
        s2, r2 = _as_rows(s, Tensor._wrap(rows, ops))
        return [(s2, t.reshape(-1, s.shape[-1]), r2, None)]
    rows = ops.asarray(np.ones((s.shape[0], 1)), dtype=s.dtype)  # (B, 1)
    return [(s, t, Tensor._wrap(rows, ops), None)]


def _keys_mask(keys):
    """The boolean keep-mask of a ``keys`` tensor (None: every entry)."""
    return None if keys is None else keys.data != 0


def _masked_kl(log_q: Tensor, p_or_log_p: Tensor, rows: Tensor, log_target: bool) -> Tensor:
    """Mean over the counted rows of KL(p ‖ q) summed over the last axis."""
    per_row = F.kl_div(log_q, p_or_log_p, reduction="none", log_target=log_target).sum(axis=-1)  # (N,)
    r = rows.reshape(-1)
    return (per_row * r).sum() * (1.0 / max(float(r.sum().item()), 1.0))


class SoftKD(Objective, Module):
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch-mean over the counted distributions
    (Hinton et al.): examples, words (token tasks) or answer starts and ends (QA, averaged)."""

    name = "soft_kd"
    needs = ("logits",)

    def __init__(self, weight: float = 1.0, temperature: float = 2.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.weight, self.temperature = weight, temperature

    def loss(self, student_out, teacher_out, batch=None):
        T = self.temperature
        parts = logit_distributions(student_out, teacher_out, batch)
        total = None
        for s, t, rows, keys in parts:
            # BEGIN TASK 4.1
            mask = _keys_mask(keys)
            log_q = F.log_softmax(s * (1.0 / T), mask=mask)  # (N, K)
            log_p = F.log_softmax(t * (1.0 / T), mask=mask)
            term = _masked_kl(log_q, log_p, rows, log_target=True) * (T * T)
            # END TASK 4.1
            total = term if total is None else total + term
        return total * (1.0 / len(parts))


class HardKD(Objective, Module):
    """Cross-entropy on the teacher's argmax labels (per example, word or answer end); with
    ``threshold`` only where the teacher's top probability reaches it."""

    name = "hard_kd"
    needs = ("logits",)

    def __init__(self, weight: float = 1.0, threshold: float | None = None):
        self.weight, self.threshold = weight, threshold

    def loss(self, student_out, teacher_out, batch=None):
        parts = logit_distributions(student_out, teacher_out, batch)
        total = None
        for s, t, rows, keys in parts:
            ops = s.backend
            tn = np.asarray(t.numpy(), dtype=np.float64)  # (N, K)
            mask = None if keys is None else np.asarray(ops.to_numpy(keys.data)) != 0
            if mask is not None:
                tn = np.where(mask, tn, -np.inf)
            target = tn.argmax(-1)
            r = np.asarray(ops.to_numpy(rows.data), dtype=np.float64).reshape(-1)
            if self.threshold is not None:
                p = np.exp(tn - tn.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                r = np.where(p.max(-1) >= self.threshold, r, 0.0)
            if keys is None:  # over every class: the cross-entropy on the counted rows
                counted = np.where(r > 0, target, -100).astype(np.int64)
                term = F.cross_entropy(s, ops.asarray(counted), ignore_index=-100) if (r > 0).any() else s.sum() * 0.0
            else:  # over a row's real entries only: KL(one-hot ‖ q) = −log q[target], q a masked softmax
                onehot = np.zeros(tn.shape)
                onehot[np.arange(len(target)), target] = 1.0
                log_q = F.log_softmax(s, mask=_keys_mask(keys))
                term = _masked_kl(log_q, _const(onehot, s), Tensor._wrap(ops.asarray(r.reshape(-1, 1), dtype=s.dtype), ops),
                                  log_target=False)
            total = term if total is None else total + term
        return total * (1.0 / len(parts))


class LogitMSE(Objective, Module):
    """Mean squared difference of logits over the counted distributions and their entries."""

    name = "logit_mse"
    needs = ("logits",)

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def loss(self, student_out, teacher_out, batch=None):
        parts = logit_distributions(student_out, teacher_out, batch)
        total = None
        for s, t, rows, keys in parts:
            m = rows if keys is None else keys * rows  # (N, 1) or (N, K)
            diff = (s - t) * m
            count = float(m.sum().item()) * (s.shape[-1] if keys is None else 1)
            term = (diff * diff).sum() * (1.0 / max(count, 1.0))
            total = term if total is None else total + term
        return total * (1.0 / len(parts))


class LayerPairObjective(Objective, Module):
    """An objective summed over the pairs of a :class:`LayerMap`: subclasses define
    ``pair_loss(k, i, j, student_out, teacher_out, batch)`` for pair number k = (i, j)."""

    def __init__(self, layer_map: LayerMap, weight: float = 1.0):
        self.layer_map, self.weight = layer_map, weight

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):  # pragma: no cover - interface
        """The loss of one (student i, teacher j) pair."""
        raise NotImplementedError

    def loss(self, student_out, teacher_out, batch=None):
        total = None
        for k, (i, j) in enumerate(self.layer_map.pairs):
            term = self.pair_loss(k, i, j, student_out, teacher_out, batch)
            total = term if total is None else total + term
        return total


class _HiddenObjective(LayerPairObjective):
    """Hidden-state losses: student states projected to the teacher width when they differ.

    ``tokens="all"`` compares every real token; ``"cls"`` only the first ([CLS]) position,
    as XtremeDistil does for classification students. With a ``combine`` map, each student
    state is compared with a learned mixture of teacher states (``self.mixing`` (L_s, L_t)).
    """

    needs = ("hidden_states",)

    def __init__(self, layer_map: LayerMap, student_width: int, teacher_width: int, weight: float = 1.0,
                 tokens: str = "all"):
        super().__init__(layer_map, weight)
        if tokens not in ("all", "cls"):
            raise ValueError(f"tokens must be 'all' or 'cls', got {tokens!r}")
        self.tokens = tokens
        self.project = student_width != teacher_width
        n_proj = len(layer_map.student_indices) if layer_map.combine else len(layer_map.pairs)
        if self.project:  # one learned projection per student state used, student → teacher width
            from ..nn.module import ModuleList

            self.projections = ModuleList([Linear(student_width, teacher_width) for _ in range(n_proj)])
        if layer_map.combine and layer_map.combine_kind == "linear":
            from ..nn.module import ModuleList

            n_t = len(layer_map.teacher_indices(layer_map.student_indices[0]))
            self.combiners = ModuleList([Linear(n_t * teacher_width, teacher_width)
                                         for _ in layer_map.student_indices])  # (L_t·D_t → D_t) each
            start = np.tile(np.eye(teacher_width, dtype=np.float32) / n_t, (1, n_t))  # (D_t, L_t·D_t): the average
            for c in self.combiners:
                c.weight.data = c.weight.backend.asarray(start)
                c.bias.data = c.bias.backend.zeros(c.bias.shape, c.bias.dtype.name)
        elif layer_map.combine:
            from ..nn.module import Parameter

            self.mixing = Parameter(np.zeros((len(layer_map.student_indices), layer_map.n_teacher),
                                             dtype=np.float32))  # (L_s, L_t) logits α

    def _student(self, k, i, student_out):
        hs = student_out.hidden_states[i]  # (B, T, Ds)
        if self.tokens == "cls":
            hs = hs[:, :1]  # (B, 1, Ds)
        return self.projections[k](hs) if self.project else hs  # (B, T, Dt)

    def _teacher(self, j, teacher_out, like):
        ht = _const(teacher_out.hidden_states[j], like)  # (B, T, Dt)
        return ht[:, :1] if self.tokens == "cls" else ht

    def _mask(self, batch, like):
        if self.tokens == "cls":  # [CLS] only: one real position per example
            return like.backend.asarray(np.ones((like.shape[0], 1)), dtype=like.dtype)  # (B, 1)
        return _token_mask(batch, like)  # (B, T)

    def states(self, k, i, j, student_out, teacher_out):
        """(student state projected, teacher state), both (B, T, D_t) (T = 1 for ``cls``)."""
        hs = self._student(k, i, student_out)
        return hs, self._teacher(j, teacher_out, hs)

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        hs, ht = self.states(k, i, j, student_out, teacher_out)
        return self.compare(hs, ht, self._mask(batch, hs))

    def loss(self, student_out, teacher_out, batch=None):
        if not self.layer_map.combine:
            return super().loss(student_out, teacher_out, batch)
        total = None
        for k, i in enumerate(self.layer_map.student_indices):
            hs = self._student(k, i, student_out)
            if self.layer_map.combine_kind == "linear":
                ops = hs.backend
                states = [self._teacher(j, teacher_out, hs).data for j in self.layer_map.teacher_indices(i)]
                stacked = Tensor._wrap(ops.concat(states, axis=-1), ops)  # (B, T, L_t·Dt), constants
                ht = self.combiners[k](stacked)  # (B, T, Dt)
                term = self.compare(hs, ht, self._mask(batch, hs))
                total = term if total is None else total + term
                continue
            w = F.softmax(self.mixing[k])  # (L_t,)
            ht = None
            for jj, j in enumerate(self.layer_map.teacher_indices(i)):
                term = self._teacher(j, teacher_out, hs) * w[jj]  # (B, T, Dt)
                ht = term if ht is None else ht + term
            term = self.compare(hs, ht, self._mask(batch, hs))
            total = term if total is None else total + term
        return total

    def compare(self, hs, ht, m):  # pragma: no cover - interface
        """The loss between student ``hs`` and teacher ``ht`` (B, T, D) over mask ``m`` (B, T)."""
        raise NotImplementedError


class HiddenMSE(_HiddenObjective):
    """Σ over mapped pairs of the mean squared error over real tokens and features."""

    name = "hidden_mse"

    def compare(self, hs, ht, m):
        diff = hs - ht
        per_token = (diff * diff).sum(axis=-1)  # (B, T)
        return (per_token * m).sum() * (1.0 / (float(m.sum().item()) * hs.shape[-1]))


class HiddenCosine(_HiddenObjective):
    """Σ over mapped pairs of the mean (1 − cosine similarity) over real tokens."""

    name = "hidden_cosine"

    def compare(self, hs, ht, m):
        return _cosine_distance(hs, ht, m)


def _cosine_distance(a, b, m):
    """Mean over ``m``'s positions of 1 − cos(a, b) along the last axis."""
    dot = (a * b).sum(axis=-1)  # (B, T)
    na = F.sqrt((a * a).sum(axis=-1) + 1e-12)
    nb = F.sqrt((b * b).sum(axis=-1) + 1e-12)
    return ((1.0 - dot / (na * nb)) * m).sum() * (1.0 / float(m.sum().item()))


class _PooledObjective(Objective, Module):
    """Compare the pooled representations (``pooler_output`` (B, D)) of both models, with a
    learned projection when widths differ (XtremeDistil's stage 1)."""

    needs = ("pooler_output",)

    def __init__(self, student_width: int, teacher_width: int, weight: float = 1.0):
        self.weight = weight
        self.projection = Linear(student_width, teacher_width) if student_width != teacher_width else None

    def loss(self, student_out, teacher_out, batch=None):
        rs = student_out.pooler_output  # (B, Ds)
        if rs is None or teacher_out.pooler_output is None:
            raise ValueError("a pooled-representation objective needs both models to return pooler_output")
        if self.projection is not None:
            rs = self.projection(rs)  # (B, Dt)
        rt = _const(teacher_out.pooler_output, rs)  # (B, Dt)
        return self.compare(rs.reshape(rs.shape[0], 1, -1), rt.reshape(rt.shape[0], 1, -1))

    def compare(self, rs, rt):  # pragma: no cover - interface
        """The loss between (B, 1, D) representations."""
        raise NotImplementedError


class PooledMSE(_PooledObjective):
    """Mean squared error of the pooled representations, ``‖W r_s − r_t‖² / D`` batch-mean."""

    name = "pooled_mse"

    def compare(self, rs, rt):
        return F.mse_loss(rs, rt)


class PooledCosine(_PooledObjective):
    """Mean ``1 − cos(W r_s, r_t)`` of the pooled representations."""

    name = "pooled_cosine"

    def compare(self, rs, rt):
        return _cosine_distance(rs, rt, rs.backend.asarray(np.ones((rs.shape[0], 1)), dtype=rs.dtype))


def _check_heads(a: Tensor, b: Tensor, what: str):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{what} needs equal head counts (student {a.shape[1]}, teacher {b.shape[1]}); "
                         "use MiniLM relations with relation heads for differing counts")


class AttentionScoreMSE(LayerPairObjective):
    """TinyBERT: MSE of pre-softmax attention scores over real (query, key) pairs."""

    name = "attention_mse"
    needs = ("attention_scores",)

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        s = student_out.attention_scores[i]  # (B, H, T, T)
        t = _const(teacher_out.attention_scores[j], s)
        _check_heads(s, t, "attention-score MSE")
        # BEGIN TASK 4.2
        m = _token_mask(batch, s)  # (B, T)
        pair = m.reshape(m.shape[0], 1, -1, 1) * m.reshape(m.shape[0], 1, 1, -1)  # (B, 1, T, T)
        diff = (s - t) * pair
        return (diff * diff).sum() * (1.0 / (float(pair.sum().item()) * s.shape[1]))
        # END TASK 4.2


def _masked_log_attention(s: Tensor, batch):
    """The real-token mask (B, T), the keep-mask of real keys (B, 1, 1, T) and the student's
    attention log-probabilities from its scores ``s`` (B, H, T, T), padded keys at −inf."""
    m = _token_mask(batch, s)  # (B, T)
    keys = m.reshape(s.shape[0], 1, 1, s.shape[-1]) != 0  # (B, 1, 1, T)
    return m, keys, F.log_softmax(s, mask=keys)


class AttentionProbMSE(LayerPairObjective):
    """XtremeDistil's transformer students: MSE of attention *probabilities* (the maps
    transformers returns as ``attentions``) over real (query, key) pairs, averaged over heads.
    Padded keys have probability 0 in both models, padded queries do not count."""

    name = "attention_prob_mse"
    needs = ("attention_scores", "attentions")

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        s = student_out.attention_scores[i]  # (B, H, T, T), scaled pre-softmax
        p = _const(teacher_out.attentions[j], s)  # (B, H, T, T)
        _check_heads(s, p, "attention-probability MSE")
        m, _, log_q = _masked_log_attention(s, batch)  # (B, T), -, (B, H, T, T)
        b, h, t, _ = s.shape
        q = F.exp(log_q)  # (B, H, T, T): the student's probabilities, 0 on padded keys
        pair = m.reshape(b, 1, t, 1) * m.reshape(b, 1, 1, t)  # (B, 1, T, T)
        diff = (q - p) * pair
        return (diff * diff).sum() * (1.0 / (float(pair.sum().item()) * h))


class AttentionKL(LayerPairObjective):
    """MobileBERT / MiniLM: KL(teacher attention ‖ student attention), batch-mean over
    (example, head, real query) rows."""

    name = "attention_kl"
    needs = ("attention_scores", "attentions")

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        s = student_out.attention_scores[i]  # (B, H, T, T), scaled pre-softmax
        p = _const(teacher_out.attentions[j], s)  # (B, H, T, T)
        _check_heads(s, p, "attention KL")
        # BEGIN TASK 4.3
        m = _token_mask(batch, s)  # (B, T)
        b, h, t, _ = s.shape
        keys = m.reshape(b, 1, 1, t) != 0  # (B, 1, 1, T) keep-mask of real keys
        log_q = F.log_softmax(s, mask=keys)  # masked keys: -inf, no gradient
        rows = F.kl_div(log_q, p, reduction="none").sum(axis=-1)  # (B, H, T)
        return (rows * m.reshape(b, 1, t)).sum() * (1.0 / (float(m.sum().item()) * h))
        # END TASK 4.3


def _merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) → (B, T, H·d)."""
    b, h, t, d = x.shape
    return F.transpose(x, 1, 2).reshape(b, t, h * d)


def _relation_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, D) → (B, R, T, D / R)."""
    b, t, dim = x.shape
    if dim % heads:
        raise ValueError(f"relation heads ({heads}) must divide the width ({dim})")
    return F.transpose(x.reshape(b, t, heads, dim // heads), 1, 2)


def _relation_kl(xs: Tensor, xt: Tensor, batch) -> Tensor:
    """KL(softmax(X_t X_tᵀ/√d_t) ‖ softmax(X_s X_sᵀ/√d_s)) over real (query, key) positions,
    batch-mean over (example, head, real query); xs, xt: (B, R, T, d)."""
    # BEGIN TASK 4.4
    b, r, t, ds = xs.shape
    m = _token_mask(batch, xs.detach()[:, 0])  # (B, T)
    keys = m.reshape(b, 1, 1, t) != 0
    s_scores = F.matmul(xs, F.transpose(xs, -1, -2)) * (1.0 / math.sqrt(ds))  # (B, R, T, T)
    with_teacher = F.matmul(xt, F.transpose(xt, -1, -2)) * (1.0 / math.sqrt(xt.shape[-1]))  # (B, R, T, T)
    log_p = F.log_softmax(with_teacher, mask=keys)
    log_q = F.log_softmax(s_scores, mask=keys)
    rows = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(axis=-1)  # (B, R, T)
    return (rows * m.reshape(b, 1, t)).sum() * (1.0 / (float(m.sum().item()) * r))
    # END TASK 4.4


class ValueRelationKL(LayerPairObjective):
    """MiniLM (Wang et al., 2020): KL between the teachers' and students' value relations
    ``softmax(V Vᵀ / √d)`` per head (equal head counts; see :class:`MiniLMv2Relations`)."""

    name = "value_relation"
    needs = ("qkv",)

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        vs = student_out.qkv[i][2]  # (B, H, T, d)
        vt = _const(teacher_out.qkv[j][2], vs)
        _check_heads(vs, vt, "value-relation KL")
        return _relation_kl(vs, vt, batch)


class MiniLMv2Relations(LayerPairObjective):
    """MiniLMv2 (Wang et al., 2021): Q-Q, K-K and V-V self-attention relations, with both
    models' heads regrouped into ``relation_heads`` heads, so head counts and widths may differ.

    The original pairs the student's last layer with one chosen teacher layer; give that
    as the layer map (e.g. ``LayerMap.build([4], 2, 6, "attention")``).
    """

    name = "minilm_v2"
    needs = ("qkv",)
    SLOTS = {"q": 0, "k": 1, "v": 2}

    def __init__(self, layer_map: LayerMap, relation_heads: int = 12, relations=("q", "k", "v"), weight: float = 1.0):
        bad = [r for r in relations if r not in self.SLOTS]
        if bad:
            raise ValueError(f"relations must be among 'q', 'k', 'v', got {bad}")
        super().__init__(layer_map, weight)
        self.relation_heads, self.relations = relation_heads, tuple(relations)

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        total = None
        for rel in self.relations:
            slot = self.SLOTS[rel]
            xs = _relation_heads(_merge_heads(student_out.qkv[i][slot]), self.relation_heads)  # (B, R, T, ds)
            xt = _relation_heads(_merge_heads(_const(teacher_out.qkv[j][slot], xs)), self.relation_heads)
            term = _relation_kl(xs, xt, batch)
            total = term if total is None else total + term
        return total


def objective_terms(objectives, student_out, teacher_out, batch=None) -> list:
    """Each weighted objective's loss, in float32 even inside a mixed-precision step (the
    relation and projection products of the objectives leave ``autocast``)."""
    with autocast(None):
        return [obj(student_out, teacher_out, batch) for obj in objectives]


def total_loss(objectives, student_out, teacher_out, batch=None) -> Tensor:
    """The sum of weighted objectives (see :func:`objective_terms`)."""
    loss = None
    for term in objective_terms(objectives, student_out, teacher_out, batch):
        loss = term if loss is None else loss + term
    return loss


def needed_outputs(objectives) -> dict:
    """The ``output_*`` flags a model forward needs for ``objectives``."""
    needs = {n for obj in objectives for n in obj.needs}  # logits / pooler_output come always
    return {"output_hidden_states": "hidden_states" in needs, "output_attentions": "attentions" in needs,
            "output_attention_scores": "attention_scores" in needs, "output_qkv": "qkv" in needs}
