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
* Attention-score MSE is on the **pre-softmax** (scaled) scores; attention KL on the
  post-softmax distributions, with the student's log-probabilities taken by a masked
  log-softmax of its scores (so masked keys carry no gradient and no NaN).
* Hidden losses sum over **every** mapped layer pair (one original repo kept only the last
  layer's term: a bug) and use the logits themselves, never ``log(p / (1 − p))``.
* When widths differ, a learned linear projection maps student states to the teacher width.

Layer maps use hidden-state indices (0 = embeddings, i = output of layer i) for hidden
losses and layer indices (0 … L−1) for attention losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core import functions as F
from ..core.tensor import Tensor
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

    def __post_init__(self):
        if self.kind not in ("hidden", "attention"):
            raise ValueError(f"LayerMap kind must be 'hidden' or 'attention', got {self.kind!r}")
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
        * ``"last"``: only the last state / layer of each model;
        * a list: student i ↔ teacher ``spec[i]``, over the student's states (hidden maps
          include the embeddings when the list has L_s + 1 entries).
        """
        if isinstance(spec, LayerMap):
            return spec
        hidden = kind == "hidden"
        if isinstance(spec, (list, tuple)):
            start = 0 if (not hidden or len(spec) == n_student + 1) else 1
            return cls(tuple((i + start, int(t)) for i, t in enumerate(spec)), n_student, n_teacher, kind)
        if spec in ("uniform", "skip"):
            if n_teacher % n_student:
                raise ValueError(f"a {spec} map needs the teacher depth ({n_teacher}) to be a multiple of the "
                                 f"student depth ({n_student}); give an explicit list instead")
            k = n_teacher // n_student
            if hidden:
                pairs = tuple((i, i * k) for i in range(n_student + 1))
            else:
                pairs = tuple((i, (i + 1) * k - 1) for i in range(n_student))
            return cls(pairs, n_student, n_teacher, kind)
        if spec == "last":
            pairs = ((n_student, n_teacher),) if hidden else ((n_student - 1, n_teacher - 1),)
            return cls(pairs, n_student, n_teacher, kind)
        raise ValueError(f"unknown layer map {spec!r}: use 'uniform', 'skip', 'last' or a list of teacher indices")


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

    def loss(self, student_out, teacher_out, batch) -> Tensor:  # pragma: no cover - interface
        """The unweighted loss."""
        raise NotImplementedError

    def __call__(self, student_out, teacher_out, batch=None) -> Tensor:
        return self.loss(student_out, teacher_out, batch) * self.weight


class SoftKD(Objective, Module):
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch-mean (Hinton et al.)."""

    needs = ("logits",)

    def __init__(self, weight: float = 1.0, temperature: float = 2.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.weight, self.temperature = weight, temperature

    def loss(self, student_out, teacher_out, batch=None):
        s = student_out.logits  # (B, C)
        t = _const(teacher_out.logits, s)  # (B, C)
        T = self.temperature
        log_q = F.log_softmax(s * (1.0 / T))
        log_p = F.log_softmax(t * (1.0 / T))
        return F.kl_div(log_q.reshape(-1, s.shape[-1]), log_p.reshape(-1, s.shape[-1]),
                        reduction="batchmean", log_target=True) * (T * T)


class HardKD(Objective, Module):
    """Cross-entropy on the teacher's argmax labels; with ``threshold`` only where the
    teacher's top probability reaches it."""

    needs = ("logits",)

    def __init__(self, weight: float = 1.0, threshold: float | None = None):
        self.weight, self.threshold = weight, threshold

    def loss(self, student_out, teacher_out, batch=None):
        s = student_out.logits
        t = np.asarray(_const(teacher_out.logits, s).numpy(), dtype=np.float64)
        target = t.argmax(-1)
        if self.threshold is not None:
            p = np.exp(t - t.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            target = np.where(p.max(-1) >= self.threshold, target, -100)
        return F.cross_entropy(s, target.astype(np.int64), ignore_index=-100)


class LogitMSE(Objective, Module):
    """Mean squared difference of logits."""

    needs = ("logits",)

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def loss(self, student_out, teacher_out, batch=None):
        s = student_out.logits
        return F.mse_loss(s, _const(teacher_out.logits, s))


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
    """Hidden-state losses: student states projected to the teacher width when they differ."""

    needs = ("hidden_states",)

    def __init__(self, layer_map: LayerMap, student_width: int, teacher_width: int, weight: float = 1.0):
        super().__init__(layer_map, weight)
        self.project = student_width != teacher_width
        if self.project:  # one learned projection per mapped pair, student → teacher width
            from ..nn.module import ModuleList

            self.projections = ModuleList([Linear(student_width, teacher_width) for _ in layer_map.pairs])

    def states(self, k, i, j, student_out, teacher_out):
        """(student state projected, teacher state), both (B, T, D_t)."""
        hs = student_out.hidden_states[i]  # (B, T, Ds)
        if self.project:
            hs = self.projections[k](hs)  # (B, T, Dt)
        return hs, _const(teacher_out.hidden_states[j], hs)


class HiddenMSE(_HiddenObjective):
    """Σ over mapped pairs of the mean squared error over real tokens and features."""

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        hs, ht = self.states(k, i, j, student_out, teacher_out)
        m = _token_mask(batch, hs)  # (B, T)
        diff = hs - ht
        per_token = (diff * diff).sum(axis=-1)  # (B, T)
        return (per_token * m).sum() * (1.0 / (float(m.sum().item()) * hs.shape[-1]))


class HiddenCosine(_HiddenObjective):
    """Σ over mapped pairs of the mean (1 − cosine similarity) over real tokens."""

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        hs, ht = self.states(k, i, j, student_out, teacher_out)
        m = _token_mask(batch, hs)
        dot = (hs * ht).sum(axis=-1)  # (B, T)
        ns = F.sqrt((hs * hs).sum(axis=-1) + 1e-12)
        nt = F.sqrt((ht * ht).sum(axis=-1) + 1e-12)
        return ((1.0 - dot / (ns * nt)) * m).sum() * (1.0 / float(m.sum().item()))


def _check_heads(a: Tensor, b: Tensor, what: str):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{what} needs equal head counts (student {a.shape[1]}, teacher {b.shape[1]}); "
                         "use MiniLM relations with relation heads for differing counts")


class AttentionScoreMSE(LayerPairObjective):
    """TinyBERT: MSE of pre-softmax attention scores over real (query, key) pairs."""

    needs = ("attention_scores",)

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        s = student_out.attention_scores[i]  # (B, H, T, T)
        t = _const(teacher_out.attention_scores[j], s)
        _check_heads(s, t, "attention-score MSE")
        m = _token_mask(batch, s)  # (B, T)
        pair = m.reshape(m.shape[0], 1, -1, 1) * m.reshape(m.shape[0], 1, 1, -1)  # (B, 1, T, T)
        diff = (s - t) * pair
        return (diff * diff).sum() * (1.0 / (float(pair.sum().item()) * s.shape[1]))


class AttentionKL(LayerPairObjective):
    """MobileBERT / MiniLM: KL(teacher attention ‖ student attention), batch-mean over
    (example, head, real query) rows."""

    needs = ("attention_scores", "attentions")

    def pair_loss(self, k, i, j, student_out, teacher_out, batch):
        s = student_out.attention_scores[i]  # (B, H, T, T), scaled pre-softmax
        p = _const(teacher_out.attentions[j], s)  # (B, H, T, T)
        _check_heads(s, p, "attention KL")
        m = _token_mask(batch, s)  # (B, T)
        b, h, t, _ = s.shape
        keys = m.reshape(b, 1, 1, t) != 0  # (B, 1, 1, T) keep-mask of real keys
        log_q = F.log_softmax(s, mask=keys)  # masked keys: -inf, no gradient
        rows = F.kl_div(log_q, p, reduction="none").sum(axis=-1)  # (B, H, T)
        return (rows * m.reshape(b, 1, t)).sum() * (1.0 / (float(m.sum().item()) * h))


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
    b, r, t, ds = xs.shape
    m = _token_mask(batch, xs.detach()[:, 0])  # (B, T)
    keys = m.reshape(b, 1, 1, t) != 0
    s_scores = F.matmul(xs, F.transpose(xs, -1, -2)) * (1.0 / math.sqrt(ds))  # (B, R, T, T)
    with_teacher = F.matmul(xt, F.transpose(xt, -1, -2)) * (1.0 / math.sqrt(xt.shape[-1]))  # (B, R, T, T)
    log_p = F.log_softmax(with_teacher, mask=keys)
    log_q = F.log_softmax(s_scores, mask=keys)
    rows = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(axis=-1)  # (B, R, T)
    return (rows * m.reshape(b, 1, t)).sum() * (1.0 / (float(m.sum().item()) * r))


class ValueRelationKL(LayerPairObjective):
    """MiniLM (Wang et al., 2020): KL between the teachers' and students' value relations
    ``softmax(V Vᵀ / √d)`` per head (equal head counts; see :class:`MiniLMv2Relations`)."""

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


def total_loss(objectives, student_out, teacher_out, batch=None) -> Tensor:
    """The sum of weighted objectives."""
    loss = None
    for obj in objectives:
        term = obj(student_out, teacher_out, batch)
        loss = term if loss is None else loss + term
    return loss


def needed_outputs(objectives) -> dict:
    """The ``output_*`` flags a model forward needs for ``objectives``."""
    needs = {n for obj in objectives for n in obj.needs}
    return {"output_hidden_states": "hidden_states" in needs, "output_attentions": "attentions" in needs,
            "output_attention_scores": "attention_scores" in needs, "output_qkv": "qkv" in needs}
