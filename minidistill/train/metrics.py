"""Task metrics: accuracy, F1, Matthews correlation, Pearson and Spearman correlation;
entity-level precision / recall / F1 for tagging (conlleval's semantics); SQuAD exact match
and F1 (the official evaluation script's rules, with v2.0's no-answer handling).

Entity scores (:func:`entity_scores`) count an entity as found when its type, first and last
word all match a gold entity; chunks are read with conlleval's rules (``I-X`` after ``O`` opens
an entity), micro-averaged over all entities, with per-type scores beside. SQuAD scores
(:func:`squad_scores`) normalise answers (lower case, punctuation and the articles a / an / the
removed, whitespace collapsed), take the best score over a question's gold answers, and count a
question without answers as right only when the prediction is empty.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from ..data.tagging import entities


def accuracy(pred, gold) -> float:
    """Fraction of exact matches."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if gold.size else 0.0


def f1(pred, gold, positive: int = 1) -> float:
    """F1 of the positive class (binary tasks, as GLUE's MRPC and QQP)."""
    pred, gold = np.asarray(pred) == positive, np.asarray(gold) == positive
    tp = float(np.sum(pred & gold))
    denom = float(pred.sum() + gold.sum())
    return 2.0 * tp / denom if denom else 0.0


def matthews(pred, gold) -> float:
    """Matthews correlation coefficient (multi-class form; 0 when undefined)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = np.union1d(pred, gold)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    conf = np.zeros((k, k))
    for p, g in zip(pred, gold):
        conf[index[g], index[p]] += 1
    t, p = conf.sum(1), conf.sum(0)
    c, s = np.trace(conf), conf.sum()
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom else 0.0


def pearson(pred, gold) -> float:
    """Pearson correlation."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(a) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(pred, gold) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(_ranks(pred), _ranks(gold))


# ------------------------------------------------------------------ tagging
def _prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "support": n_gold}


def entity_scores(pred_tags, gold_tags, scheme: str | None = None) -> dict:
    """Entity-level micro precision / recall / F1, per-type scores and word accuracy.

    Args:
        pred_tags: per sentence a list of predicted tag names.
        gold_tags: per sentence the gold tag names (as many as predicted).

    Returns:
        ``{"precision", "recall", "f1", "token_accuracy", "per_type": {type: {...}}}``.
    """
    if len(pred_tags) != len(gold_tags):
        raise ValueError(f"{len(pred_tags)} predicted sentences but {len(gold_tags)} gold ones")
    tp, n_pred, n_gold = collections.Counter(), collections.Counter(), collections.Counter()
    right = total = 0
    for k, (p, g) in enumerate(zip(pred_tags, gold_tags)):
        if len(p) != len(g):
            raise ValueError(f"sentence {k}: {len(p)} predicted tags but {len(g)} gold ones")
        pe, ge = set(entities(p, scheme)), set(entities(g, scheme))
        for kind, _, _ in pe:
            n_pred[kind] += 1
        for kind, _, _ in ge:
            n_gold[kind] += 1
        for kind, _, _ in pe & ge:
            tp[kind] += 1
        right += sum(a == b for a, b in zip(p, g))
        total += len(g)
    out = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    out.pop("support")
    out["token_accuracy"] = right / total if total else 0.0
    out["per_type"] = {kind: _prf(tp[kind], n_pred[kind], n_gold[kind]) for kind in sorted(set(n_pred) | set(n_gold))}
    return out


# --------------------------------------------------------------------- SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles removed, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers; an empty one scores 1 against another empty
    one, else 0 (v2.0's rule, which v1.1's script lacks: it scores an empty pair 0; only a gold
    answer that normalises to nothing, such as "the", tells them apart)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((collections.Counter(p) & collections.Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions, gold_answers, version_2: bool | None = None) -> dict:
    """Exact match and F1 in percent, each the best over a question's gold answers, with
    ``HasAns`` / ``NoAns`` breakdowns when both kinds of question occur.

    The two official scripts differ, and each is followed: v2.0's drops gold answers that
    normalise to nothing and scores a question without answers 100 for an empty prediction
    (else 0); v1.1's keeps every gold answer as written.

    Args:
        predictions: per question the predicted text.
        gold_answers: per question a list of gold texts (empty: unanswerable).
        version_2: the rules to follow (default: v2.0's when a question has no answer).
    """
    if len(predictions) != len(gold_answers):
        raise ValueError(f"{len(predictions)} predictions but {len(gold_answers)} questions")
    if version_2 is None:
        version_2 = any(not g for g in gold_answers)
    em, f1s = [], []
    for pred, golds in zip(predictions, gold_answers):
        if version_2 or not golds:
            golds = [g for g in golds if normalize_answer(g)] or [""]
        em.append(max(squad_exact(pred, g) for g in golds))
        f1s.append(max(squad_f1(pred, g) for g in golds))
    em, f1s = np.asarray(em), np.asarray(f1s)
    out = {"f1": float(100.0 * f1s.mean()) if len(f1s) else 0.0, "exact_match": float(100.0 * em.mean()) if len(em) else 0.0}
    has = np.asarray([bool(g) for g in gold_answers])
    if has.any() and not has.all():
        out.update({"HasAns_exact": float(100.0 * em[has].mean()), "HasAns_f1": float(100.0 * f1s[has].mean()),
                    "NoAns_exact": float(100.0 * em[~has].mean()), "NoAns_f1": float(100.0 * f1s[~has].mean())})
    return out


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def compute(names, pred, gold) -> dict[str, float]:
    """The named metrics of predictions against gold labels."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    return {n: METRICS[n](pred, gold) for n in names}
