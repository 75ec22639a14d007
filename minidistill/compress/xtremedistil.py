"""XtremeDistil: "XtremeDistil: Multi-stage Distillation for Massive Multilingual Models"
(Mukherjee & Awadallah, ACL 2020) and its predecessor on RNN students (2019).

Students: a BiLSTM (:class:`~minidistill.models.BiLSTMStudent`, word embeddings taken from the
teacher's and optionally reduced by PCA) or a narrow transformer (:func:`make_student` with a
smaller ``hidden_size``: PCA-reduced embeddings). The transfer set is unlabelled task text
(here: the training texts and augmented copies of them, :func:`minidistill.data.augment`).

The staged recipe, with teacher t and student s:

1. representation:  L₁ = ‖W r_s − r_t‖² / D on the transfer set, where r is the pooled [CLS]
   representation (BiLSTM: max-pool → GELU dense, already teacher-wide; the teacher's pooled
   output, as the v1 code's ``get_pooled_output``) or, for a transformer student, Σ over the top
   L_s + 1 teacher hidden states of the [CLS]-position MSE plus the MSE of the last L_s
   attention maps — the probabilities, as transformers returns them and the original compares
   them (``AttentionProbMSE``; an earlier version of ours compared pre-softmax scores);
2. logits:          L₂ = mean (z_s − z_t)² on the transfer set, with gradual unfreezing from
   the top (head → LSTM / top layer → … → embeddings);
3. labels:          L₃ = CE(z_s, y) on the labelled set, with the same unfreezing.

The single-stage variants train on the transfer set with hard distillation, CE(z_s, argmax z_t)
("hard"), or soft distillation, T²·KL at temperature T ("soft").

NER (the paper's headline setting) is distilled per token: a tagging teacher gets a per-token
BiLSTM (``BiLSTMConfig.task = "token"``, logits (B, T, C) from every token's state) whose
stage 1 matches its per-token representation r_t with an intermediate teacher layer (default
the middle one, ``teacher_layer``; the original's ``teacher_layer`` is 6 or −7 of 12) over all
real tokens; transformer students compare all tokens instead of [CLS]; every logit objective
counts each word's first sub-word only (``kd.logit_distributions``).

Choices where the original code differs: stage 2 regresses the logits themselves (the released
code regressed ``log(p / (1 − p))`` of the teacher's probabilities); the optimiser is AdamW
with a linear schedule per phase (the code used Adam with cosine warm restarts); hard
distillation, described in the paper but absent from the released v1 code, is offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import use_backend
from ..models.bert import head_kind
from ..models.bilstm import BiLSTMConfig, BiLSTMStudent
from ..nn import init as nn_init
from .distill import Stage
from .kd import AttentionProbMSE, HardKD, HiddenMSE, LayerMap, LogitMSE, PooledMSE, SoftKD
from .student import pca_projection
from .registry import DemoStep, Method, register


def _word_embeddings(teacher) -> np.ndarray:
    base = getattr(teacher, "bert", teacher)
    w = base.embeddings.word_embeddings.weight
    return w.backend.to_numpy(w.data)


def make_bilstm_student(teacher, hidden_size: int = 300, embedding_size: int | None = None, num_layers: int = 1,
                        dropout: float = 0.2, seed: int = 0) -> BiLSTMStudent:
    """A BiLSTM student for ``teacher``: word embeddings copied from the teacher (reduced by PCA
    when ``embedding_size`` is smaller than the teacher's width), the representation layer as
    wide as the teacher's hidden states, the teacher's number of labels; on its backend. A
    token-classification teacher gets a per-token student (``task="token"``: XtremeDistil's
    NER setting); a QA teacher is refused (XtremeDistil has no RNN student for QA).

    Args:
        hidden_size: LSTM units per direction.
        embedding_size: student embedding width (default: the teacher's).
    """
    cfg_t = teacher.config
    kind = head_kind(teacher) or "sequence"
    if kind not in ("sequence", "token"):
        raise ValueError(f"a BiLSTM student labels sentences or tokens; the teacher has a {kind} head")
    words = _word_embeddings(teacher)  # (V, D_t)
    width = embedding_size or words.shape[1]
    if width != words.shape[1]:
        mean, v = pca_projection(words, width)
        words = (words - mean) @ v  # (V, E)
    config = BiLSTMConfig(vocab_size=cfg_t.vocab_size, embedding_size=width, hidden_size=hidden_size,
                          representation_size=cfg_t.hidden_size, num_labels=cfg_t.num_labels, num_layers=num_layers,
                          dropout=dropout, pad_token_id=cfg_t.pad_token_id,
                          problem_type=getattr(cfg_t, "problem_type", None),
                          id2label=dict(getattr(cfg_t, "id2label", None) or {}) or None, task=kind)
    nn_init.manual_seed(seed)
    with use_backend(teacher.backend):
        student = BiLSTMStudent(config)
    student.to(dtype=next(teacher.parameters()).dtype.name)
    student.load_state_dict({"embeddings.weight": np.asarray(words, dtype=np.float32)}, strict=False)
    return student


def xtremedistil_stages(student, teacher, variant: str = "staged", representation=None, logits=None,
                        labels=None, temperature: float = 1.0, teacher_layer: int | None = None) -> list[Stage]:
    """The stages of an XtremeDistil run of ``student`` from ``teacher``.

    Args:
        variant: ``"staged"`` (representation → logits → labels, unfreezing in the last two),
            ``"hard"`` or ``"soft"`` (one stage on the transfer set).
        representation: :class:`~minidistill.train.TrainConfig` of the representation stage
            (default: ``distill``'s config).
        logits: the same, for the logit stage.
        labels: the same, for the fine-tuning stage on labels.
        temperature: of the soft variant.
        teacher_layer: the teacher hidden state a per-token BiLSTM's representation matches in
            stage 1 (default: the middle one, L_t // 2; negative counts from the top).

    Sentence tasks compare [CLS] positions in stage 1, token tasks every real token (NER).
    """
    if variant == "hard":
        return [Stage("hard", [HardKD()], data="transfer", config=logits)]
    if variant == "soft":
        return [Stage("soft", [SoftKD(temperature=temperature)], data="transfer", config=logits)]
    if variant != "staged":
        raise ValueError(f"unknown XtremeDistil variant {variant!r}: use 'staged', 'hard' or 'soft'")
    lt = teacher.config.num_hidden_layers
    tokens = "all" if head_kind(teacher) in ("token", "qa") else "cls"
    if isinstance(student, BiLSTMStudent) and student.config.task == "token":
        j = lt // 2 if teacher_layer is None else teacher_layer % (lt + 1)
        pair = LayerMap(((2, j),), 2, lt)  # the student's representation r ↔ teacher hidden state j
        first = [HiddenMSE(pair, student.config.representation_size, teacher.config.hidden_size, tokens="all")]
    elif isinstance(student, BiLSTMStudent):
        first = [PooledMSE(student.config.representation_size, teacher.config.hidden_size)]
    else:
        ls = student.config.num_hidden_layers
        top = LayerMap.build(list(range(lt - ls, lt + 1)), ls, lt, "hidden")  # student 0..L_s ↔ top L_s+1
        first = [HiddenMSE(top, student.config.hidden_size, teacher.config.hidden_size, tokens=tokens)]
        if student.config.num_attention_heads == teacher.config.num_attention_heads:
            last = LayerMap.build(list(range(lt - ls, lt)), ls, lt, "attention")
            first.append(AttentionProbMSE(last))  # probabilities, as transformers' attentions
    return [
        Stage("representation", first, data="transfer", config=representation, evaluate=False),
        Stage("logits", [LogitMSE()], data="transfer", unfreeze=True, config=logits),
        Stage("labels", task_weight=1.0, data="train", unfreeze=True, config=labels),
    ]


# ------------------------------------------------------------------- registry
@dataclass
class BiLSTMSettings:
    """The BiLSTM student's sizes."""

    hidden_size: int = 300  # LSTM units per direction
    embedding_size: int | None = None  # word-embedding width (default: the teacher's; narrower: PCA of its embeddings)


def _build(teacher, student, settings: BiLSTMSettings, total_steps):
    return make_bilstm_student(teacher, settings.hidden_size, settings.embedding_size, seed=student.seed)


def _demo(ctx):
    bilstm = {"student": {"kind": "bilstm"}, "bilstm": {"hidden_size": 128, "embedding_size": 64}}
    if ctx.preset == "quick":  # one stage of soft KD + labels: the seven staged phases do not fit
        return [DemoStep("bilstm", "XtremeDistil BiLSTM (one stage)", "distill",
                         {**bilstm, "objectives": {"soft_kd": 1.0, "temperature": 2.0, "task": 1.0},
                          "train": {"lr": 2e-3, "max_steps": 150}}, cache=True)]
    return [DemoStep("bilstm", "XtremeDistil BiLSTM (staged)", "distill",
                     {**bilstm, "objectives": {"soft_kd": 1.0, "temperature": 2.0}, "train": {"lr": 2e-3},
                      "recipe": "xtremedistil"})]


register(Method("bilstm", "an XtremeDistil BiLSTM student (word embeddings, BiLSTM, max-pool)", settings=BiLSTMSettings,
                build=_build, recipes=("single", "xtremedistil", "xtremedistil-hard", "xtremedistil-soft"),
                demo=_demo, order=20))
