"""Learning curves from a Trainer's JSON-lines log (matplotlib is an optional extra).

    from minidistill.plot import learning_curves
    fig = learning_curves("runs/log.jsonl", path="curves.png")
"""

from __future__ import annotations

import json
from pathlib import Path


def read_log(log_file) -> tuple[list[dict], list[dict]]:
    """(training steps, evaluations) from a Trainer log."""
    steps, evals = [], []
    for line in Path(log_file).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        (evals if "eval" in rec else steps).append(rec)
    return steps, evals


def smooth(values, window: int = 20) -> list[float]:
    """Trailing moving average (the raw per-batch loss is noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def learning_curves(log_file, metric: str | None = None, path=None, window: int = 20):
    """Plot the training loss (raw and smoothed) and the dev metric against the step.

    Args:
        log_file: a Trainer ``log_file``. metric: which dev metric (default: the first logged).
        path: also save the figure there (PNG, PDF, …).

    Returns:
        The matplotlib figure.
    """
    try:
        import matplotlib

        matplotlib.use("Agg") if path is not None else None
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'minidistill[notebooks]'") from None
    steps, evals = read_log(log_file)
    if not steps:
        raise ValueError(f"{log_file} has no training steps")
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [s["step"] for s in steps]
    loss = [s["loss"] for s in steps]
    ax.plot(x, loss, color="0.8", lw=0.8, label="loss (per batch)")
    ax.plot(x, smooth(loss, window), color="C0", lw=1.8, label=f"loss (mean of {window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if evals:
        metric = metric or next(iter(k for k in evals[0]["eval"] if k != "loss"))
        ax2 = ax.twinx()
        ax2.plot([e["step"] for e in evals], [e["eval"][metric] for e in evals], "o-", color="C1", label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric}")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [h.get_label() for h in lines], loc="center right")
    else:
        ax.legend(loc="upper right")
    ax.set_title(Path(log_file).name)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
