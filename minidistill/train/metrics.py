"""Task metrics: accuracy, F1, Matthews correlation, Pearson and Spearman correlation."""

from __future__ import annotations

import numpy as np


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


METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def compute(names, pred, gold) -> dict[str, float]:
    """The named metrics of predictions against gold labels."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    return {n: METRICS[n](pred, gold) for n in names}
