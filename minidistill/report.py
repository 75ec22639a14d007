"""The compression report: what a student costs and keeps, measured beside its teacher.

``report(students, teacher=…, data=…)`` gives, per model: unique and executed parameters,
FLOPs per token, size on disk, latency (one sequence) and sequences/s (batches of 64) measured
in one interleaved run with the teacher, accuracy on a split and retention against the teacher,
the fold residual (how far the folded plain model's logits are from the model's own) and, for
adapters, the fraction of parameters that training updates. :class:`Report` prints a text
table, writes JSON and plots accuracy against parameters and against speed.

``minidistill report MODEL_DIR [MODEL_DIR …] --teacher DIR`` does the same for saved models; a
folder holding several saved models (``runs/demo``) reports every one.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .core.tensor import no_grad


@dataclass
class Report:
    """Rows of a compression report (one dict per model), the teacher's name and the split."""

    rows: list = field(default_factory=list)
    teacher: str | None = None
    split: str = "test"
    meta: dict = field(default_factory=dict)
    metric: str = "accuracy"  # the score of the task: accuracy, or entity / SQuAD F1 (tagging, QA)

    def row(self, name: str) -> dict:
        """The row of model ``name``."""
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(f"no model {name!r} in the report; have {[r['name'] for r in self.rows]}")

    def to_json(self) -> str:
        """The report as JSON (for scripts)."""
        return json.dumps({"teacher": self.teacher, "split": self.split, "metric": self.metric, "meta": self.meta,
                           "rows": self.rows},
                          indent=2, default=float)

    def save_json(self, path) -> None:
        """Write :meth:`to_json` atomically."""
        from .fileio import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")

    def to_text(self) -> str:
        """A terminal table."""
        cols = [("model", "name", "{}"), ("unique", "unique_parameters", "{:,.0f}"),
                ("executed", "executed_parameters", "{:,.0f}"), ("MFLOP/tok", "mflops_per_token", "{:.1f}"),
                ("disk MB", "disk_mb", "{:.1f}"), ("latency ms", "latency_ms", "{:.1f}"), ("seq/s", "seq_per_s", "{:.0f}"),
                ("± speed", "speed_spread", "{:.0%}"), ("speed-up", "speedup", "{:.2f}×"), (f"{self.split} {_SHORT.get(self.metric, self.metric)}", self.metric, "{:.4f}"),
                ("retention", "retention", "{:.1f}%"), ("fold Δ", "fold_residual", "{:.1e}"),
                ("trained", "trained_fraction", "{:.3%}")]
        if any(r.get("exact_match") is not None for r in self.rows):  # QA: exact match beside F1
            at = [k for _, k, _ in cols].index(self.metric) + 1
            cols.insert(at, (f"{self.split} EM", "exact_match", "{:.2f}"))
        cells = [[h for h, _, _ in cols]]
        for r in self.rows:
            mark = (" *" if r["name"] == self.teacher else "") + (" †" if r.get("notes") else "")
            cells.append([("—" if r.get(k) is None else fmt.format(r[k])) + (mark if k == "name" else "")
                          for _, k, fmt in cols])
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
        lines.insert(1, "-" * len(lines[0]))
        if self.teacher:
            lines.append(f"* teacher; speed measured in one interleaved run ({_plural(self.meta.get('rounds', '?'), 'round')}, medians)")
        for r in self.rows:
            for note in r.get("notes") or ():
                lines.append(f"† {r['name']}: {note}")
        return "\n".join(lines)

    def plot(self, path) -> Path:
        """Accuracy against unique parameters and against sequences/s, the teacher marked;
        written to ``path``: SVG by minidistill itself (no plotting library needed), PNG and
        other formats with matplotlib."""
        path = Path(path)
        if path.suffix.lower() == ".svg":
            from .fileio import atomic_path
            from .plot import report_svg

            with atomic_path(path) as tmp:
                tmp.write_text(report_svg(self.rows, self.teacher, self.split, self.metric), encoding="utf-8")
            return path
        try:
            import matplotlib
        except ImportError:
            raise ImportError(f"{path.suffix} plots need matplotlib (pip install matplotlib); "
                              "an .svg path needs nothing") from None

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plot import _place_labels, pareto_front

        metric = self.metric
        rows = [r for r in self.rows if r.get(metric) is not None]
        if not rows:
            raise ValueError(f"nothing to plot: no model has a {metric} (give data)")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)  # the dpi it is saved at: label offsets are in pixels
        panels = ((axes[0], "seq_per_s", "sequences / s (log)", True), (axes[1], "disk_mb", "size on disk, MB (log)", False))
        for ax, key, label, faster_better in panels:
            pts = {r["name"]: (r[key], r[metric]) for r in rows if r.get(key)}  # untimed: not on the speed panel
            ax.set_xscale("log")
            for r in rows:
                if r["name"] in pts and r.get("variant_of") in pts:
                    (x1, y1), (x2, y2) = pts[r["variant_of"]], pts[r["name"]]
                    ax.plot([x1, x2], [y1, y2], ls="--", color="#999", lw=1, zorder=1)
            front = pareto_front(list(pts.values()), faster_better)
            ax.plot([p[0] for p in front], [p[1] for p in front], color="seagreen", lw=1.5, zorder=2,
                    label="Pareto front")
            for name, (x, y) in pts.items():
                teacher = name == self.teacher
                ax.scatter([x], [y], marker="*" if teacher else "o", s=160 if teacher else 40,
                           color="crimson" if teacher else "steelblue", zorder=3)
            ax.set_xlabel(label)
            ax.set_ylabel(f"{self.split} {metric.replace('_', ' ')}")
            ax.grid(alpha=0.3, which="both")
            ax.margins(0.12)
            fig.canvas.draw()  # fixes the limits, so data → pixels is final
            height = fig.get_figheight() * fig.dpi
            to_px = ax.transData.transform
            screen = [(float(to_px(xy)[0]), height - float(to_px(xy)[1]), name) for name, xy in pts.items()]
            font_px = 8 / 72 * fig.dpi  # the labels' size in pixels: 8 points
            for lx, ly, text, px, py, leader in _place_labels(screen, char_w=0.62 * font_px, height=1.15 * font_px):
                ax.annotate(text, (pts[text][0], pts[text][1]), xytext=(lx - px, py - ly), textcoords="offset pixels",
                            fontsize=8, arrowprops={"arrowstyle": "-", "color": "#bbb"} if leader else None)
            ax.legend(loc="lower left", fontsize=8)
        fig.suptitle("★ teacher", x=0.02, ha="left", fontsize=9, color="crimson")
        fig.tight_layout()
        from .fileio import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # an old plot survives a failed write
            fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
        plt.close(fig)
        return path


_SHORT = {"accuracy": "acc", "exact_match": "EM"}

#: a run with fewer optimiser steps than this is flagged in the report as too short to mean much
SHORT_RUN_STEPS = 100


def _majority_rate(data) -> float | None:
    """The accuracy of always predicting the most frequent class of ``data`` (None without labels)."""
    labels = getattr(data, "labels", None)
    if labels is None or not len(labels) or getattr(labels, "dtype", None) is None or labels.dtype.kind not in "iu":
        return None
    return float(np.bincount(labels).max() / len(labels))


def _notes(row: dict, folder, majority: float | None) -> list[str]:
    """Why a row's figures may mean little: a run too short, or an accuracy no better than the
    majority class."""
    notes = []
    try:
        steps = json.loads((Path(folder) / "metrics.json").read_text())["steps"] if folder else None
    except (OSError, KeyError, ValueError, TypeError):
        steps = None
    if isinstance(steps, int) and steps < SHORT_RUN_STEPS:
        notes.append(f"trained for {steps} steps only: too short a run for its accuracy to mean much")
    if row.get("speed_spread") is not None and row["speed_spread"] > SPREAD_WARNING:
        notes.append(f"its round times spread by {row['speed_spread']:.0%} (interquartile range over median; "
                     "the machine was busy): "
                     "trust its speed less, or measure again with more --rounds on a quiet machine")
    if majority is not None and row.get("accuracy") is not None and row["accuracy"] <= majority + 0.02:
        notes.append(f"accuracy {row['accuracy']:.4f} is about that of always predicting the most frequent class "
                     f"({majority:.4f}): it has learned little")
    return notes


def _variant_of(folder, folders: dict) -> str | None:
    """The name of the model (among ``folders``) that the model saved in ``folder`` was made
    from: an int8 copy (``minidistill quantize``) or an ONNX export (``minidistill export``)."""
    if folder is None:
        return None
    source = None
    for name, key in (("export.json", None), ("metrics.json", "quantization")):
        try:
            info = json.loads((Path(folder) / name).read_text())
        except (OSError, ValueError):
            continue
        info = info.get(key, {}) if key else info
        source = info.get("source") if isinstance(info, dict) else None
        if source:
            break
    if not source:
        return None
    for other, path in folders.items():
        if path is not None and Path(path).resolve() == Path(source).resolve():
            return other
    return None


def _disk_bytes(model, folder=None) -> int:
    for name in ("model.safetensors", "model.onnx"):
        if folder is not None and (Path(folder) / name).is_file():
            return (Path(folder) / name).stat().st_size
    if not hasattr(model, "save_pretrained"):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return (Path(tmp) / "model.safetensors").stat().st_size


def trained_fraction_of(model) -> float | None:
    """For a model with adapters: the fraction adapter-only training updates (adapters,
    LayerNorms, task head); None for a model trained in full. Leaves ``requires_grad`` as it was."""
    from .nn.adapters import adapter_parameters, train_adapters_only

    if not adapter_parameters(model):
        return None
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        train_adapters_only(model)
        return model.num_parameters(trainable_only=True) / model.num_parameters()
    finally:
        for p, f in flags:
            p.requires_grad = f


def _recorded_fraction(folder, model) -> float | None:
    """The trained fraction a saved run recorded (``metrics.json``: ``trained_parameters``);
    without a record, what adapter-only training would update (None without adapters)."""
    if folder is not None and (Path(folder) / "metrics.json").is_file():
        try:
            rec = json.loads((Path(folder) / "metrics.json").read_text())
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict):  # a run's record: only adapter runs trained a fraction
            adapters = rec.get("adapters", "none") not in (None, "none") and "trained_parameters" in rec
            return rec["trained_parameters"] / model.num_parameters() if adapters else None
    return trained_fraction_of(model)


def _fold_residual(model, batch) -> float | None:
    """max |logits(fold(model)) − logits(model)| on ``batch``; None when nothing folds."""
    from .compress.fold import fold

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            folded, rep = fold(model, return_report=True, unroll=True)
        except Exception:  # a model kind without rules for every part: report no residual
            return None
    if not rep.rules:
        return None
    model.eval()
    folded.eval()
    with no_grad():
        a = model(**batch).logits.numpy()
        b = folded(**batch).logits.numpy()
    return float(np.abs(a.astype(np.float64) - b).max())


#: a model whose round times spread more than this (interquartile range over median) gets a warning
SPREAD_WARNING = 0.15


def _speed(models: dict, tok, data, max_length: int, rounds: int, max_rounds: int | None = None) -> dict:
    """Sequences/s over ``data`` (batches of 64, length-bucketed as in evaluation) and the
    latency of one sequence, every model in turn within each round; medians, and the spread
    of the round times (interquartile range / median). While some model's spread is above
    :data:`SPREAD_WARNING`, more rounds are run, up to ``max_rounds`` (default 3 × ``rounds``):
    on a busy machine a few more samples move the median to the quiet rounds."""
    from .data.datasets import model_inputs

    batches = [model_inputs(b) for b in data.batches(tok, 64, max_length, shuffle=False)]
    single = model_inputs(next(iter(data.select([0]).batches(tok, 1, max_length, shuffle=False))))
    times = {n: [] for n in models}
    lat = {n: [] for n in models}
    for m in models.values():  # warm-up: compile kernels, fill caches
        m.eval()
        with no_grad():
            m(**batches[0])
            m(**single)

    def spread(ts):  # the interquartile range relative to the median: one slow round does not move it
        if len(ts) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
        return (q3 - q1) / statistics.median(ts)

    max_rounds = max_rounds or 3 * rounds
    done = 0
    while done < rounds or (done < max_rounds and any(spread(t) > SPREAD_WARNING for t in times.values())):
        for name, m in models.items():
            with no_grad():
                t0 = time.perf_counter()
                for b in batches:
                    m(**b)
                times[name].append(time.perf_counter() - t0)
                for _ in range(5):
                    t0 = time.perf_counter()
                    m(**single)
                    lat[name].append(time.perf_counter() - t0)
        done += 1
    return {n: {"seq_per_s": len(data) / statistics.median(times[n]), "latency_ms": 1e3 * statistics.median(lat[n]),
                "speed_spread": spread(times[n]), "rounds": done}
            for n in models}


def report(students, teacher=None, data=None, tokenizer=None, split: str = "test", max_length: int = 128,
           rounds: int = 5, speed_examples: int = 256, folders: dict | None = None, fold_check: bool = True,
           accuracies: dict | None = None) -> Report:
    """Measure ``students`` (a model, or a dict name → model) beside ``teacher``.

    Args:
        students: one model or ``{name: model}``.
        teacher: the teacher model (its row is marked, retention and speed-up are against it).
        data: a labelled :class:`~minidistill.data.TextDataset` for accuracy (None: no accuracy);
            its texts also time the models (the first ``speed_examples``).
        tokenizer: the tokenizer (required with ``data``).
        split: the split's name, for the table.
        max_length: tokens per sequence for FLOPs, speed and accuracy.
        rounds: interleaved speed rounds (medians reported); up to three times as many while
            the round times of some model spread by more than 15% (interquartile range over
            median: a busy machine).
        folders: name → saved folder, to read the size on disk instead of writing a copy.
        fold_check: fold each model (PHM adapters, WID, MiniALBERT unrolled …) and report the
            largest logit difference.
        accuracies: name → score (accuracy, or F1 for tagging and QA) already measured on
            ``data`` (e.g. from a run's ``metrics.json``), used instead of evaluating again.

    Returns:
        A :class:`Report`.
    """
    from .models.stats import model_stats
    from .train import evaluate

    models = dict(students) if isinstance(students, dict) else {"student": students}
    if teacher is not None:
        models = {"teacher": teacher, **{k: v for k, v in models.items() if k != "teacher"}}
    if data is not None and tokenizer is None:
        raise ValueError("report: accuracy needs the tokenizer of the data")
    wanted = getattr(getattr(data, "task", None), "num_labels", None)
    for name, m in models.items():
        have = getattr(m.config, "num_labels", None)
        if data is not None and data.labels is not None and wanted and have and have != wanted:
            raise ValueError(f"report: {name} predicts {have} labels but the data ({data.task.name}) has {wanted}; "
                             "report models of one task together, on that task's data")
    folders = folders or {}
    rows = []
    metric = task_metric(data)
    from .data import TextDataset
    from .data.datasets import model_inputs

    timing = data.select(range(min(speed_examples, len(data)))) if data is not None else \
        TextDataset(["a short sentence to time the models"] * 64)
    speed = _speed(models, tokenizer, timing, max_length, rounds) if tokenizer is not None else {}
    probe = model_inputs(next(iter(timing.select(range(min(8, len(timing)))).batches(tokenizer, 8, max_length, shuffle=False)))) \
        if tokenizer is not None else None
    for name, m in models.items():
        has_heads = hasattr(m.config, "num_attention_heads")
        st = m.stats(max_length) if callable(getattr(m, "stats", None)) else model_stats(m, max_length) if has_heads else {"unique_parameters": m.num_parameters(),
                                                           "executed_parameters": m.num_parameters(), "flops_per_token": None}
        row = {"name": name, "kind": type(m).__name__, "unique_parameters": st["unique_parameters"],
               "executed_parameters": st["executed_parameters"],
               "mflops_per_token": None if st["flops_per_token"] is None else st["flops_per_token"] / 1e6,
               "disk_mb": _disk_bytes(m, folders.get(name)) / 1e6,
               "trained_fraction": _recorded_fraction(folders.get(name), m),
               "variant_of": _variant_of(folders.get(name), folders),
               **speed.get(name, {"seq_per_s": None, "latency_ms": None, "speed_spread": None})}
        if accuracies and name in accuracies:
            row[metric] = accuracies[name]
        elif data is not None:
            scores = evaluate(m, tokenizer, data, 64, max_length)
            row.update({k: scores[k] for k in (metric, "exact_match") if k in scores})
        row["fold_residual"] = _fold_residual(m, probe) if fold_check and probe is not None and name != "teacher" else None
        rows.append(row)
    majority = _majority_rate(data)
    for r in rows:
        r["notes"] = _notes(r, folders.get(r["name"]), majority)
    base = rows[0] if teacher is not None else None
    for r in rows:
        r["speedup"] = r["seq_per_s"] / base["seq_per_s"] if base and r.get("seq_per_s") and base.get("seq_per_s") else None
        r["retention"] = (100 * r[metric] / base[metric]) if base and r.get(metric) is not None and base.get(metric) else None
    return Report(rows, "teacher" if teacher is not None else None, split,
                  {"rounds": max((v["rounds"] for v in speed.values()), default=rounds), "max_length": max_length,
                   "speed_examples": len(timing)}, metric)


def task_metric(data) -> str:
    """The score a report shows for ``data``'s task: accuracy for sentence tasks, entity F1 for
    tagging, SQuAD F1 for QA (EM beside it)."""
    kind = getattr(getattr(data, "task", None), "kind", "sequence")
    return "accuracy" if kind == "sequence" else "f1"


def saved_models(paths) -> dict:
    """``{name: folder}`` of saved models among ``paths``: each is a model folder (has
    ``config.json``) or a folder of model folders (every child with a ``config.json``)."""
    found = {}
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder")
        if (p / "config.json").is_file():
            found[p.name] = p
            continue
        children = sorted(c for c in p.iterdir() if (c / "config.json").is_file())
        if not children:
            raise FileNotFoundError(f"{p} holds no saved model (no config.json in it or its sub-folders)")
        for c in children:
            found[c.name] = c
    return found


def _plural(n, word: str) -> str:
    """``1 round``, ``3 rounds``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
