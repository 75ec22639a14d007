"""BERT-of-Theseus: progressive module replacing.

Xu, Zhou, Ge, Wei, Zhou: "BERT-of-Theseus: Compressing BERT by Progressive Module
Replacing", EMNLP 2020.

The predecessor's L layers are grouped into n modules (6 layers → 3 modules of 2); module i
has one successor layer s_i. Every training forward draws one gate per module,

    r_i ~ Bernoulli(p),     y_i = r_i · s_i(y_{i−1}) + (1 − r_i) · prd_i(y_{i−1}),

so the successor layers learn to stand in for their modules while the rest of the network is
the predecessor's. Only the successor is trained: the predecessor's layers are frozen and get
no gradient (the original still computed them). The embeddings, pooler and head are the
successor's own, initialised from the predecessor's. The original (``run_glue.py``) puts only
the successor layers in its optimiser and trains on the task cross-entropy alone (lr 2e-5):
``train="layers"`` (``--theseus.train=layers --objectives.soft_kd=0 --objectives.task=1``) is
that recipe; the default, ``train="all"``, also trains the embeddings, pooler and head, and the
CLI's default objective is soft KD from the predecessor — both ours, not the original's. At
inference only the successor runs.

Replacement schedules (``p`` after step t):

    constant:    p = p₀ (0.5) for t < N, then p = 1 (fine-tuning the successor alone);
    curriculum:  p = min(1, k·t + b)   (b = 0.3, k = 6e-4 in the original).

Gates come from the model's own seeded generator, one per module per step (a known port bug
draws one gate per batch for all modules). ``minidistill.fold`` extracts the successor.
The head is whatever the predecessor's is (sentence classifier, token tagger, QA span head):
the mixed encoder's output goes through the successor's ``head_output``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.bert import BertTaskModel, ModelOutput, keep_mask_from_attention_mask
from ..nn.module import Module
from .fold import clone, register_fold
from .student import layer_spec, make_student
from .registry import DemoStep, Method, register


@dataclass
class ConstantReplacement:
    """``p = rate`` for the first ``steps`` steps, then 1 (successor fine-tuning)."""

    rate: float = 0.5
    steps: int = 2500

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0 or self.steps < 0:
            raise ValueError(f"constant replacement needs rate in [0, 1] and steps ≥ 0, got {self.rate}, {self.steps}")

    def __call__(self, step: int) -> float:
        """The replacement rate at ``step``."""
        # BEGIN TASK 5.2
        return self.rate if step < self.steps else 1.0
        # END TASK 5.2


@dataclass
class LinearReplacement:
    """The curriculum ``p = min(1, slope · step + base)``."""

    base: float = 0.3
    slope: float = 6e-4

    def __post_init__(self):
        if not 0.0 <= self.base <= 1.0 or self.slope < 0:
            raise ValueError(f"curriculum replacement needs base in [0, 1] and slope ≥ 0, got {self.base}, {self.slope}")

    def __call__(self, step: int) -> float:
        """The replacement rate at ``step``."""
        # BEGIN TASK 5.2
        return min(1.0, self.slope * step + self.base)
        # END TASK 5.2


def module_grouping(n_predecessor: int, n_successor: int, grouping=None) -> list[list[int]]:
    """Predecessor layer indices of each module: consecutive blocks by default, or ``grouping``
    (a list of n_successor lists covering every predecessor layer once, in order)."""
    if n_successor < 1:
        raise ValueError(f"the successor needs at least one layer, got {n_successor}")
    if grouping is None:
        if n_predecessor % n_successor:
            raise ValueError(f"{n_predecessor} predecessor layers do not split into {n_successor} equal modules; "
                             "pass grouping=[[0, 1], [2, 3, 4], …] to choose the modules")
        k = n_predecessor // n_successor
        return [list(range(i * k, (i + 1) * k)) for i in range(n_successor)]
    grouping = [list(map(int, g)) for g in grouping]
    flat = [i for g in grouping for i in g]
    if len(grouping) != n_successor or flat != list(range(n_predecessor)) or any(not g for g in grouping):
        raise ValueError(f"grouping must split layers 0..{n_predecessor - 1} in order into {n_successor} non-empty "
                         f"modules, got {grouping}")
    return grouping


class TheseusModel(Module):
    """A predecessor (frozen) and its successor, mixed by per-module gates while training.

    Args:
        predecessor: a fine-tuned BERT task model with any head — sentence, token or QA —
            (copied, not modified); the successor has the same head.
        num_layers: successor depth n (one successor layer per module).
        init: how successor layers start (``make_student``: ``"lower"`` copies the first n
            layers as the original, or ``"upper"``, ``"uniform"``, a list).
        grouping: explicit modules when L is not a multiple of n.
        schedule: :class:`ConstantReplacement` or :class:`LinearReplacement` (or any
            ``step → p``); read by :meth:`callbacks` after every step.
        seed: the gates' generator seed.
        train: ``"layers"``: only the successor layers train (the original's optimiser holds
            the ``scc_layer`` modules alone); ``"all"``: the successor's embeddings, pooler and
            head train too (ours before; they start as the predecessor's).
    """

    TRAIN = ("all", "layers")

    def __init__(self, predecessor, num_layers: int, init="lower", grouping=None, schedule=None, seed: int = 0,
                 train: str = "all"):
        if train not in self.TRAIN:
            raise ValueError(f"theseus train must be one of {self.TRAIN}, got {train!r}")
        self.train_part = train
        if not isinstance(predecessor, BertTaskModel):
            raise TypeError("Theseus replaces modules of a BERT task model (sentence, token or QA head), got "
                            f"{type(predecessor).__name__}")
        self.grouping = module_grouping(predecessor.config.num_hidden_layers, num_layers, grouping)
        self.predecessor = clone(predecessor)
        self.predecessor.requires_grad_(False)
        self.successor = make_student(predecessor, num_layers=num_layers, init=init)
        self.schedule = schedule or ConstantReplacement()
        self.p = float(self.schedule(0))
        self.rng = np.random.default_rng(seed)
        self.last_gates: np.ndarray | None = None
        self.requires_grad_(True)

    @property
    def config(self):
        """The successor's config."""
        return self.successor.config

    def layer_groups(self) -> list:
        """The successor's layer groups."""
        return self.successor.layer_groups()

    def draw_gates(self) -> np.ndarray:
        """One Bernoulli(p) gate per module (True: the successor layer runs)."""
        return self.rng.random(len(self.grouping)) < self.p

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states=False, start_positions=None, end_positions=None, masked_positions=None,
                **unused) -> ModelOutput:
        """In training mode, a gated mix of successor layers and predecessor modules; in
        evaluation mode, the successor alone. Returns ``logits``, ``loss`` (with labels),
        ``pooler_output`` and, when asked, the hidden state after every module."""
        targets = {k: v for k, v in (("start_positions", start_positions), ("end_positions", end_positions),
                                     ("masked_positions", masked_positions)) if v is not None}
        if not self.training:
            return self.successor(input_ids, attention_mask, token_type_ids, position_ids, labels,
                                  output_hidden_states=output_hidden_states, **targets)
        gates = self.last_gates = self.draw_gates()
        s = self.successor
        x = s.bert.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, D)
        ops = s.bert.embeddings.word_embeddings.weight.backend
        mask = None if attention_mask is None else keep_mask_from_attention_mask(attention_mask, ops)
        hidden = [x] if output_hidden_states else None
        for i, layers in enumerate(self.grouping):
            if gates[i]:
                x = s.bert.encoder.layer[i](x, mask, return_probs=False)[0]  # (B, T, D)
            else:
                for j in layers:
                    x = self.predecessor.bert.encoder.layer[j](x, mask, return_probs=False)[0]  # (B, T, D)
            if hidden is not None:
                hidden.append(x)
        pooled = s.bert.pooler(x, attention_mask) if s.bert.pooler is not None else None  # (B, D)
        out = ModelOutput(last_hidden_state=x, pooler_output=pooled,
                          hidden_states=tuple(hidden) if hidden is not None else None)
        return s.head_output(out, labels, **targets)  # the successor's own head, whatever the task

    def requires_grad_(self, flag: bool = True) -> "TheseusModel":
        """Freeze or unfreeze the successor (its layers only with ``train="layers"``); the
        predecessor always stays frozen."""
        if self.train_part == "layers":
            self.successor.requires_grad_(False)
            for layer in self.successor.bert.encoder.layer:
                layer.requires_grad_(flag)
        else:
            self.successor.requires_grad_(flag)
        return self

    def on_step(self, step: int) -> None:
        """Set ``p`` for the next step from the schedule."""
        self.p = float(self.schedule(step))

    def training_state(self) -> dict:
        """What a training checkpoint needs beyond the parameters: the replacement rate and the
        gates' generator, so a resumed run draws the same gates (JSON)."""
        return {"p": self.p, "rng": self.rng.bit_generator.state}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state`."""
        self.p = float(state["p"])
        self.rng.bit_generator.state = state["rng"]

    def callbacks(self) -> dict:
        """Trainer callbacks that follow the schedule: ``Trainer(..., callbacks=m.callbacks())``."""
        return {"on_step_end": [lambda trainer: self.on_step(trainer.state.step)]}

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Only the successor is optimised (only its layers with ``train="layers"``: the frozen
        parts are left out)."""
        from ..train.optim import param_groups

        return param_groups(self.successor, weight_decay)

    def save_pretrained(self, path):
        """Save the successor (a plain BERT) in HF format."""
        return self.successor.save_pretrained(path)


@register_fold(TheseusModel)
def _fold_theseus(model: TheseusModel, report) -> Module:
    """The successor, as a plain smaller BERT."""
    out = clone(model.successor)
    out.requires_grad_(True)
    return out


# ------------------------------------------------------------------- registry
@dataclass
class TheseusSettings:
    """BERT-of-Theseus's replacement schedule."""

    replace: str = "constant"  # constant | linear
    rate: float = 0.5  # constant: the replacement probability p
    steps: int | None = None  # constant: steps at p before p = 1 (default: half the run)
    base: float = 0.3  # linear: p = min(1, slope·t + base)
    slope: float | None = None  # linear: default: p reaches 1 at two thirds of the run
    train: str = "all"  # layers: only the successor layers train (the original); all: embeddings, pooler and head too


def _build(teacher, student, settings: TheseusSettings, total_steps):
    if settings.replace == "constant":
        schedule = ConstantReplacement(settings.rate, settings.steps if settings.steps is not None else total_steps // 2)
    elif settings.replace == "linear":
        slope = settings.slope if settings.slope is not None else (1 - settings.base) / max(1, 2 * total_steps / 3)
        schedule = LinearReplacement(settings.base, slope)
    else:
        raise ValueError(f"theseus.replace must be 'constant' or 'linear', got {settings.replace!r}")
    return TheseusModel(teacher, student.num_layers, init=layer_spec(student.init), schedule=schedule,
                        seed=student.seed, train=settings.train)


def _demo(ctx):
    if ctx.preset == "quick":  # measured: 100 steps leave the successor at the majority class
        return []
    return [DemoStep("theseus-2l", "BERT-of-Theseus 2 layers, folded", "distill",
                     {"student": {"kind": "theseus", "num_layers": 2},
                      "objectives": {"soft_kd": 1.0, "temperature": 2.0}}, cache=True)]


register(Method("theseus", "BERT-of-Theseus: successor layers replace teacher modules progressively, folded",
                settings=TheseusSettings, build=_build, folds=True, demo=_demo, order=40))
