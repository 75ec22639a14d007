"""Shared machinery of the experiment tables: run rows through ``minidistill distill``, keep
finished rows in a JSON file (a re-run only runs what is asked), measure every saved student's
speed against the teacher in one interleaved run, and rewrite a marked block of RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

import minidistill as md
from minidistill.cli import DataSection, ModelSection, distill_run, load_classifier, load_splits
from minidistill.data import Tokenizer
from minidistill.train import evaluate, predict

HERE = Path(__file__).resolve().parent


def parse_args(doc: str, epochs: int, out: str, extra=None):
    """The tables' common command line: teacher, epochs, max length, rows, output folder."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--teacher", default="runs/teacher", help="a fine-tuned teacher")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--only", default=None, help="comma-separated run names")
    ap.add_argument("--out", default=out)
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    if extra:
        extra(ap)
    return ap.parse_args()


def cpu_name(default: str | None = None) -> str:
    """The processor's model name (``/proc/cpuinfo``); ``default`` (the architecture when not
    given) where none can be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default or platform.machine()


def machine(backend: str | None = None, cpu: str | None = None) -> str:
    """A one-line description of where the figures were measured: the processor (``cpu``, its
    model name when not given), its cores and the backend that ran them (``backend``; the
    current default backend when not given)."""
    name = backend or md.backends.current_backend().name
    return f"{cpu or cpu_name()}, {platform.machine()} ({os.cpu_count()} cores), {name} backend"


def paired_gap(model, teacher_correct, tok, data, max_length: int, resamples: int = 2000, seed: int = 0):
    """Test-accuracy gap of ``model`` to the teacher in points, with a 95% paired-bootstrap
    interval: both are scored on the same resampled sentences, so the interval reflects how
    much the gap itself depends on which sentences the test set happened to hold."""
    correct = predict(model, tok, data, 64, max_length).argmax(-1) == data.labels  # (N,)
    diff = correct.astype(np.float64) - teacher_correct  # (N,) per-sentence +1 / 0 / -1
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)  # (resamples,)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return 100 * diff.mean(), 100 * lo, 100 * hi


def throughput(models: dict, tok, data, max_length: int, rounds: int = 3) -> dict:
    """Test-set sequences/s of every model, interleaved over ``rounds``; medians."""
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            predict(model, tok, data, 64, max_length)
            times[name].append(time.perf_counter() - t0)
    return {name: len(data) / statistics.median(ts) for name, ts in times.items()}


def run_rows(plan: dict, names: list, teacher_dir: Path, out: str, results_path: Path) -> dict:
    """Run ``names`` of ``plan`` (name → (label, DistillConfig)); returns every finished row
    (earlier ones from ``results_path`` included), saving after each."""
    done = json.loads(results_path.read_text()) if results_path.is_file() else {}
    done = {k: v for k, v in done.items() if not k.startswith("_")}  # the last table is rebuilt
    for name in names:
        if name not in plan:
            raise SystemExit(f"unknown run {name!r}; choose from {', '.join(plan)}")
        label, cfg = plan[name]
        cfg.teacher = ModelSection(path=str(teacher_dir))
        cfg.output_dir = f"{out}/{name}"
        print(f"== {name}: {label}", flush=True)
        r = distill_run(cfg)
        done[name] = {"label": label, "dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"],
                      "parameters": r["parameters"], "wall_s": r["train_seconds"], "dir": r["output_dir"]}
        print(f"   dev {done[name]['dev']:.4f} test {done[name]['test']:.4f} in {r['train_seconds']:.0f} s", flush=True)
        results_path.parent.mkdir(exist_ok=True)
        results_path.write_text(json.dumps(done, indent=1))
    return done


def measure(done: dict, teacher_dir: Path, max_length: int, order=None) -> list[dict]:
    """The table's rows: the teacher, then every finished student with retention and speed-up
    measured against the teacher in one interleaved run."""
    _, dev, test = load_splits(DataSection(task="rotten_tomatoes"))
    tok = Tokenizer.from_pretrained(teacher_dir)
    teacher = load_classifier(teacher_dir)
    t_scores = {s: evaluate(teacher, tok, d, 64, max_length)["accuracy"] for s, d in (("dev", dev), ("test", test))}
    names = [n for n in (order or done) if n in done and Path(done[n]["dir"]).is_dir()]
    models = {"teacher": teacher, **{n: load_classifier(done[n]["dir"]) for n in names}}
    speed = throughput(models, tok, test, max_length)
    rows = [{"label": "teacher: MiniLM-L6 (6 layers, 384)", "parameters": teacher.num_parameters(),
             "dev": t_scores["dev"], "test": t_scores["test"], "retention": 100.0, "seq_per_s": speed["teacher"],
             "speedup": 1.0, "wall_s": float("nan")}]
    for n in names:
        r = done[n]
        rows.append({**r, "name": n, "retention": 100 * r["test"] / t_scores["test"], "seq_per_s": speed[n],
                     "speedup": speed[n] / speed["teacher"]})
    for r in rows:
        print(f"{r['label']:50s} dev {r['dev']:.4f} test {r['test']:.4f} ret {r['retention']:5.1f}% "
              f"{r['seq_per_s']:7.0f} seq/s ×{r['speedup']:.2f}")
    return rows


def table_lines(rows: list[dict]) -> list[str]:
    """The markdown table of ``rows``."""
    lines = ["| student | params | dev acc | test acc | retention | seq/s | speed-up | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wall = "—" if r["wall_s"] != r["wall_s"] else f"{r['wall_s']:.0f} s"  # NaN: the teacher's row
        lines.append(f"| {r['label']} | {r['parameters'] / 1e6:.1f}M | {r['dev']:.4f} | {r['test']:.4f} | "
                     f"{r['retention']:.1f}% | {r['seq_per_s']:.0f} | {r['speedup']:.2f}× | {wall} |")
    return lines


def write_block(marker: str, lines: list[str], path: Path = HERE / "RESULTS.md") -> None:
    """Replace the block between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path``
    (inserted before the first block or section when absent), atomically."""
    start_tag, end_tag = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    block = "\n".join([start_tag, *lines, "", end_tag])
    text = path.read_text()
    start, end = text.find(start_tag), text.find(end_tag)
    if start >= 0 and end >= 0:
        text = text[:start] + block + text[end + len(end_tag):]
    else:  # before the first block or section, never inside another block
        cuts = [i for i in (text.find("\n<!-- "), text.find("\n## ")) if i >= 0]
        at = min(cuts) if cuts else len(text)
        text = text[:at] + "\n\n" + block + "\n" + text[at:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def today() -> str:
    """The date stamp of a table."""
    return date.today().isoformat()
