"""Linear probes on a frozen checkpoint: how much of a task its [CLS] vector, its pooler output
and the mean over its token vectors carry.

Each probe is an L2-regularised logistic regression on standardised features of the frozen
encoder (MiniLM-L6 by default) over the rotten_tomatoes training set, fitted with L-BFGS in
float64 (torch); the regularisation strength is chosen on dev from 1e-4 … 1e-1 and test is
reported once. It explains why ``classifier_pooling="mean"`` suits a sentence-embedding
checkpoint: the adapters of Compacter start from what the frozen encoder already offers.

    python benchmarks/pooling_probe.py [--model minilm-l6] [--max-length 64]

Writes the block between the ``pooling_probe`` markers in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import minidistill as md
from minidistill.cli import DataSection, _model_path, load_splits
from minidistill.data import Tokenizer
from minidistill.models import BertModel
from minidistill.models.bert import mean_over_tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import machine, today, write_block  # noqa: E402

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)


def features(model, tok, data, max_length: int, batch_size: int = 64) -> dict:
    """name → (N, D) float64 features of ``data``: ``cls``, ``pooler`` and ``mean``."""
    out = {"cls": [], "pooler": [], "mean": []}
    with md.no_grad():
        for i in range(0, len(data), batch_size):
            enc = tok.encode(data.texts[i:i + batch_size], max_length=max_length)
            o = model(enc["input_ids"], enc["attention_mask"])
            out["cls"].append(o.last_hidden_state.numpy()[:, 0])  # (B, D)
            out["pooler"].append(o.pooler_output.numpy())  # (B, D)
            out["mean"].append(mean_over_tokens(o.last_hidden_state, enc["attention_mask"]).numpy())  # (B, D)
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def probe(x_train, y_train, evals, strength: float) -> list[float]:
    """Fit ``softmax(x W + b)`` with ``strength · ‖W‖²`` by L-BFGS; accuracies on ``evals``."""
    torch.manual_seed(0)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + strength * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return [float((lin(torch.from_numpy(a)).argmax(1).numpy() == b).mean()) for a, b in evals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()
    path = _model_path(args.model)
    tok, model = Tokenizer.from_pretrained(path), BertModel.from_pretrained(path)
    model.eval()
    splits = load_splits(DataSection(task="rotten_tomatoes"))
    t0 = time.perf_counter()
    feats = [features(model, tok, s, args.max_length) for s in splits]
    print(f"encoded {sum(map(len, splits))} sentences in {time.perf_counter() - t0:.0f} s", flush=True)
    labels = [np.asarray(s.labels, dtype=np.int64) for s in splits]
    lines = [f"## Linear probes on frozen `{args.model}` features · {today()} · {machine()}", "",
             f"rotten_tomatoes, max length {args.max_length}; L2-regularised logistic regression on standardised "
             f"features, strength chosen on dev from {', '.join(map(str, STRENGTHS))}. What a frozen encoder "
             f"offers a head that reads [CLS] or the mean over tokens (`classifier_pooling`).", "",
             "| features | L2 | train acc | dev acc | test acc |", "|---|---:|---:|---:|---:|"]
    names = {"cls": "[CLS] hidden state", "pooler": "pooler output (dense + tanh on [CLS])",
             "mean": "mean over real tokens"}
    for key, name in names.items():
        mu, sd = feats[0][key].mean(0), feats[0][key].std(0) + 1e-6  # (D,)
        xs = [(f[key] - mu) / sd for f in feats]
        best = max(((s, probe(xs[0], labels[0], list(zip(xs, labels)), s)) for s in STRENGTHS),
                   key=lambda sa: sa[1][1])
        print(f"{name}: L2 {best[0]:g}, train/dev/test {best[1]}", flush=True)
        lines.append(f"| {name} | {best[0]:g} | {best[1][0]:.4f} | {best[1][1]:.4f} | {best[1][2]:.4f} |")
    write_block("pooling_probe", lines)


if __name__ == "__main__":
    main()
