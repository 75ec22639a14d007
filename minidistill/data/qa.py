"""Extractive question answering: SQuAD v1.1 / v2.0 files, model windows, answer spans.

* :func:`read_squad` reads the official layout (``{"version", "data": [{"title", "paragraphs":
  [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
  "is_impossible"}]}]}]}``); every answer is checked against its context.
* :class:`QADataset` cuts each (question, context) pair into windows of ``max_length`` tokens:
  the question whole, the context in pieces that overlap by ``doc_stride`` tokens (BERT's
  recipe). A window's target is the answer's first and last token when the whole answer lies
  inside its context part, else position 0 ([CLS]) — "no answer in this window", which is also
  the target of every window of an unanswerable v2.0 question.
* :func:`best_answers` turns start / end logits back into text: per question, over its windows,
  the ``n_best`` highest start and end logits, spans inside the context with
  ``start ≤ end < start + max_answer_length``, scored ``s_start + s_end``; the best span's
  characters are cut from the context with the tokenizer's offsets. With v2.0 the answer is
  empty when the null score ``s_start[CLS] + s_end[CLS]`` (its smallest over the windows) beats
  the best span by more than ``null_threshold``.

A batch holds the model inputs, ``example_ids`` (window numbers) and, for answerable data,
``labels`` (B, 2): the start and end token of each window's target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DataError, TaskSpec, WindowedDataset, _check_text_file

QA_METRICS = ("f1", "exact_match")


@dataclass(frozen=True)
class QAExample:
    """One question on one context; ``answers`` are (text, character start) pairs, empty when the
    question has no answer in the context (v2.0)."""

    id: str
    question: str
    context: str
    answers: tuple = ()
    title: str = ""

    @property
    def is_impossible(self) -> bool:
        """True when the context holds no answer."""
        return not self.answers


def read_squad(path) -> tuple:
    """Read a SQuAD-format JSON file: ``(examples, version)``.

    Raises:
        DataError: a missing field, or an answer whose text is not at its offset in the
            context, named by the question id.
    """
    path = Path(path)
    _check_text_file(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise DataError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    version = str(doc.get("version", "1.1"))
    examples = []
    for article in doc["data"]:
        for p, para in enumerate(article.get("paragraphs", [])):
            if "context" not in para or "qas" not in para:
                raise DataError(f"{path}: paragraph {p + 1} of {article.get('title', '?')!r} lacks 'context' or 'qas'")
            context = para["context"]
            for qa in para["qas"]:
                qid = str(qa.get("id", ""))
                if "question" not in qa:
                    raise DataError(f"{path}: question {qid!r} has no 'question' text")
                impossible = bool(qa.get("is_impossible", False))
                answers = []
                if not impossible:
                    for a in qa.get("answers", []):
                        text, start = a.get("text"), a.get("answer_start")
                        if text is None or start is None:
                            raise DataError(f"{path}: question {qid!r} has an answer without 'text' or 'answer_start'")
                        if context[start:start + len(text)] != text:
                            raise DataError(f"{path}: question {qid!r}: answer {text!r} is not at character {start} "
                                            f"of its context (found {context[start:start + len(text)]!r})")
                        answers.append((text, int(start)))
                    if not answers and "answers" in qa and version.startswith("1"):
                        raise DataError(f"{path}: question {qid!r} has no answer (a v1.1 file needs one)")
                examples.append(QAExample(qid, qa["question"], context, tuple(answers), article.get("title", "")))
    if not examples:
        raise DataError(f"{path} holds no questions")
    return examples, version


def load_squad_file(path, name: str | None = None) -> "QADataset":
    """A :class:`QADataset` from a SQuAD-format file (v1.1 or v2.0, from its ``version``)."""
    examples, version = read_squad(path)
    v2 = version.startswith("2") or any(e.is_impossible for e in examples)
    task = TaskSpec(name or Path(path).stem, "question", "context", "answers", None, QA_METRICS, kind="qa",
                    scheme="squad_v2" if v2 else "squad")
    return QADataset(examples, task)


@dataclass
class QADataset(WindowedDataset):
    """Questions on contexts, with answers (or without: transfer data).

    Attributes:
        examples: the :class:`QAExample` list.
        task: the :class:`TaskSpec` (``kind="qa"``; ``scheme`` ``squad`` or ``squad_v2``).
        doc_stride: context tokens shared by neighbouring windows.
        labelled: whether batches carry targets (False for transfer data).
    """

    examples: list
    task: TaskSpec | None = None
    doc_stride: int = 128
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def version_2(self) -> bool:
        """True for SQuAD v2.0 data (questions may have no answer)."""
        return self.task is not None and self.task.scheme == "squad_v2"

    @property
    def texts(self) -> list:
        """The questions (with :attr:`text_pairs`, what fingerprints read)."""
        return [e.question for e in self.examples]

    @property
    def text_pairs(self) -> list:
        """The contexts."""
        return [e.context for e in self.examples]

    @property
    def labels(self):
        """The answers, or None for transfer data (the attribute the training code checks)."""
        return [e.answers for e in self.examples] if self.labelled else None

    def select(self, indices) -> "QADataset":
        """A dataset of the questions at ``indices``."""
        return QADataset([self.examples[int(i)] for i in indices], self.task, self.doc_stride, self.labelled)

    def without_labels(self) -> "QADataset":
        """The same questions, without targets (transfer data for distillation)."""
        return QADataset(list(self.examples), self.task, self.doc_stride, False)

    # ---------------------------------------------------------------- windows
    def encode(self, tokenizer, max_length: int) -> list:
        """The windows of every question, in order (cached): ``(ids, type_ids, (start, end),
        offsets, example)`` with ``offsets[k]`` the character span of token k in the context
        (None outside the context) and ``example`` the question's index."""
        key = (id(tokenizer), max_length, self.doc_stride)
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, self._windows(tokenizer, max_length))
        return self._encoded[1]

    def _windows(self, tokenizer, max_length: int) -> list:
        out = []
        q = [e.question for e in self.examples]
        c = [e.context for e in self.examples]
        try:
            pieces = tokenizer.encode_windows(q, c, max_length, self.doc_stride)
        except ValueError as e:
            raise DataError(f"{self.task.name if self.task else 'QA data'}: {e}") from None
        for i, (ex, windows) in enumerate(zip(self.examples, pieces)):
            for w in windows:
                out.append((w["ids"], w["type_ids"], _target(ex, w["offsets"]), w["offsets"], i))
        return out

    def collate(self, encoded, indices, pad_id: int) -> dict:
        """Pad the windows at ``indices``: model inputs, ``example_ids`` and ``labels`` (B, 2)."""
        rows = [encoded[i] for i in indices]
        batch = self.pad_windows(rows, indices, pad_id)
        if self.labelled:
            batch["labels"] = np.asarray([r[2] for r in rows], dtype=np.int64).reshape(len(rows), 2)
        return batch

    def predictions(self, start_logits, end_logits, tokenizer, max_length: int, n_best: int = 20,
                    max_answer_length: int = 30, null_threshold: float = 0.0) -> list:
        """The answer text for every question (see :func:`best_answers`)."""
        return best_answers(self, self.encode(tokenizer, max_length), start_logits, end_logits, n_best,
                            max_answer_length, self.version_2, null_threshold)


def _target(ex: QAExample, offsets) -> tuple:
    """(start token, end token) of the first answer inside this window's context, else (0, 0)."""
    if ex.is_impossible:
        return (0, 0)
    text, a = ex.answers[0]
    b = a + len(text)  # the answer is characters [a, b)
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > a or offsets[ctx[-1]][1] < b:
        return (0, 0)
    start = next(k for k in ctx if offsets[k][1] > a)
    end = next(k for k in reversed(ctx) if offsets[k][0] < b)
    return (start, end)


def best_answers(data: QADataset, encoded, start_logits, end_logits, n_best: int = 20, max_answer_length: int = 30,
                 version_2: bool = False, null_threshold: float = 0.0) -> list:
    """Per question, ``(answer text, score)``: the best span over its windows (module docstring).

    ``start_logits`` / ``end_logits``: (windows, T) in window order (padding columns ignored).
    """
    if len(start_logits) != len(encoded) or len(end_logits) != len(encoded):
        raise ValueError(f"{len(start_logits)} rows of logits for {len(encoded)} windows")
    best = [("", -np.inf) for _ in data.examples]
    null = [np.inf for _ in data.examples]
    for w, (ids, _, _, offsets, i) in enumerate(encoded):
        n = len(ids)
        s, e = np.asarray(start_logits[w][:n], dtype=np.float64), np.asarray(end_logits[w][:n], dtype=np.float64)
        null[i] = min(null[i], s[0] + e[0])
        for a in np.argsort(-s, kind="stable")[:n_best]:
            if offsets[a] is None:
                continue
            for b in np.argsort(-e, kind="stable")[:n_best]:
                if offsets[b] is None or b < a or b - a + 1 > max_answer_length:
                    continue
                score = s[a] + e[b]
                if score > best[i][1]:
                    ctx = data.examples[i].context
                    best[i] = (ctx[offsets[a][0]:offsets[b][1]], float(score))
    out = []
    for i, (text, score) in enumerate(best):
        if version_2 and (not np.isfinite(score) or null[i] - score > null_threshold):
            out.append(("", float(null[i])))
        else:
            out.append((text, float(score)))
    return out

