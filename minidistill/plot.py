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


# ------------------------------------------------------- the report as SVG, no dependency
def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    import math

    span = hi - lo or abs(hi) or 1.0
    step = 10 ** math.floor(math.log10(span / n))
    for mult in (1, 2, 2.5, 5, 10):
        if span / (step * mult) <= n:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or a[0] >= b[2] or a[3] <= b[1] or a[1] >= b[3])


def _place_labels(points: list[tuple[float, float, str]], char_w: float = 6.2, height: float = 11.0,
                  bounds: tuple | None = None) -> list[tuple]:
    """Positions of the labels of ``points`` (screen coordinates, y down) such that no label
    overlaps another label or any point's marker, inside ``bounds`` (x0, y0, x1, y1) when given.

    Each label tries the eight places around its point, then places further out on widening
    rings (up to 160 px away); a label set away from its point gets a leader line.

    Returns:
        ``(x, y, text, px, py, leader)`` per point: the text's baseline start, the point, and
        whether a leader line should join them.
    """
    import math

    markers = [(px - 5, py - 5, px + 5, py + 5) for px, py, _ in points]
    placed: list[tuple] = []
    out = []
    for px, py, text in sorted(points, key=lambda p: (p[0], p[1])):
        w = char_w * len(text)

        def box_at(x, y, w=w):
            return (x, y - height + 1, x + w, y + 3)

        near = [(px + 7, py + 4), (px - 7 - w, py + 4), (px + 6, py - 6), (px - 6 - w, py - 6),
                (px + 6, py + 15), (px - 6 - w, py + 15), (px - w / 2, py - 9), (px - w / 2, py + 19)]
        rings = [(px + r * math.cos(a) - (w if math.cos(a) < 0 else 0), py + r * math.sin(a) + 4)
                 for r in range(18, 161, 8) for a in [i * math.pi / 8 for i in range(16)]]
        choice = None
        for x, y in near + rings:
            box = box_at(x, y)
            if bounds and (box[0] < bounds[0] or box[1] < bounds[1] or box[2] > bounds[2] or box[3] > bounds[3]):
                continue
            if any(_overlaps(box, b) for b in placed) or any(_overlaps(box, m) for m in markers):
                continue
            choice = (x, y)
            break
        if choice is None:  # nowhere free: below everything placed so far, with a leader line
            lowest = max([b[3] for b in placed] + [py])
            choice = (px + 7, lowest + height + 2)
        x, y = choice
        placed.append(box_at(x, y))
        leader = (x, y) not in near[:6]
        out.append((x, y, text, px, py, leader))
    return out


def pareto_front(points: list[tuple[float, float]], larger_x_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (higher y always better; x higher or lower
    better as said), in order of x: the best accuracy reachable at each speed or size."""
    order = sorted(points, key=lambda p: (-p[0], -p[1]) if larger_x_is_better else (p[0], -p[1]))
    front, best = [], float("-inf")
    for x, y in order:
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def report_svg(rows: list[dict], teacher: str | None = None, split: str = "test", metric: str = "accuracy") -> str:
    """The compression report's picture as SVG text (no plotting library needed).

    Two panels: accuracy against sequences/s and against size on disk, both on log axes; the
    Pareto front of each (the models nothing beats on both axes) as a step line; the teacher a
    red star; an int8 or ONNX variant joined to the float model it was made from by a dashed
    line; every model labelled by name, no two labels overlapping and none covering a point.
    """
    import math
    from xml.sax.saxutils import escape

    rows = [r for r in rows if r.get(metric) is not None]
    if not rows:
        raise ValueError(f"nothing to plot: no model has a {metric} (give data)")
    W, H, pad_l, pad_r, pad_t, pad_b = 520, 400, 58, 24, 34, 46
    accs = [r[metric] for r in rows]
    y_lo, y_hi = min(accs) - 0.01, max(accs) + 0.01
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             '<text x="8" y="16"><tspan fill="crimson">★ teacher</tspan>   <tspan fill="seagreen">— Pareto front'
             '</tspan>   <tspan fill="#999">- - int8 / ONNX variant of a model</tspan></text>']
    panels = (("seq_per_s", "sequences / s (log)", True), ("disk_mb", "size on disk, MB (log)", False))
    for k, (key, title, faster_better) in enumerate(panels):
        pts = [(r[key], r[metric], r["name"]) for r in rows if r.get(key)]
        if not pts:
            continue
        xs = [math.log10(p[0]) for p in pts]
        x_lo, x_hi = min(xs), max(xs)
        margin = (x_hi - x_lo) * 0.08 or 0.3
        x_lo, x_hi = x_lo - margin, x_hi + margin
        ox = k * W

        def sx(v, x_lo=x_lo, x_hi=x_hi, ox=ox):
            return ox + pad_l + (math.log10(v) - x_lo) / (x_hi - x_lo) * (W - pad_l - pad_r)

        def sy(v):
            return pad_t + (y_hi - v) / (y_hi - y_lo) * (H - pad_t - pad_b)

        parts.append(f'<g class="panel" data-axis="{key}">')
        parts.append(f'<rect x="{ox + pad_l}" y="{pad_t}" width="{W - pad_l - pad_r}" height="{H - pad_t - pad_b}" '
                     'fill="none" stroke="#888"/>')
        for t in _ticks(y_lo, y_hi):
            parts.append(f'<line x1="{ox + pad_l}" x2="{ox + W - pad_r}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                         f'<text x="{ox + pad_l - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3f}</text>')
        for t in [t for t in _ticks(math.floor(x_lo), math.ceil(x_hi)) if float(t).is_integer()]:
            for sub in (1, 2, 5):
                v = sub * 10 ** t
                if x_lo <= math.log10(v) <= x_hi:
                    parts.append(f'<text x="{sx(v):.1f}" y="{H - pad_b + 15}" text-anchor="middle">{v:g}</text>')
        parts.append(f'<text x="{ox + (W + pad_l - pad_r) / 2}" y="{H - 8}" text-anchor="middle">{title}</text>'
                     f'<text x="{ox + 14}" y="{(H + pad_t - pad_b) / 2}" text-anchor="middle" '
                     f'transform="rotate(-90 {ox + 14} {(H + pad_t - pad_b) / 2})">{escape(split)} {escape(metric.replace("_", " "))}</text>')
        front = pareto_front([(v, a) for v, a, _ in pts], larger_x_is_better=faster_better)
        steps = [f"{sx(v):.1f},{sy(a):.1f}" for v, a in front]
        parts.append(f'<polyline class="pareto" points="{" ".join(steps)}" fill="none" stroke="seagreen" '
                     'stroke-width="1.5"/>')
        where = {name: (sx(v), sy(a)) for v, a, name in pts}
        for r in rows:
            base = r.get("variant_of")
            if base in where and r["name"] in where:
                (x1, y1), (x2, y2) = where[base], where[r["name"]]
                parts.append(f'<line class="variant" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                             'stroke="#999" stroke-dasharray="4 3"/>')
        screen = []
        for v, acc, name in pts:
            cx, cy = where[name]
            if name == teacher:
                star = " ".join(f"{cx + (8 if i % 2 == 0 else 3.4) * math.sin(i * math.pi / 5):.1f},"
                                f"{cy - (8 if i % 2 == 0 else 3.4) * math.cos(i * math.pi / 5):.1f}" for i in range(10))
                parts.append(f'<polygon class="teacher" points="{star}" fill="crimson"/>')
            else:
                parts.append(f'<circle class="model" data-name="{escape(name)}" cx="{cx:.1f}" cy="{cy:.1f}" r="4" '
                             'fill="steelblue"/>')
            screen.append((cx, cy, name))
        bounds = (ox + pad_l + 2, pad_t + 2, ox + W - pad_r - 2, H - pad_b - 2)
        for lx, ly, text, px, py, leader in _place_labels(screen, bounds=bounds):
            if leader:
                parts.append(f'<line class="leader" x1="{px:.1f}" y1="{py:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}" '
                             'stroke="#bbb"/>')
            parts.append(f'<text class="label" x="{lx:.1f}" y="{ly:.1f}">{escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
