"""Compacter fine-tuning and MiniALBERT distillation on rotten_tomatoes (MiniLM-L6 teacher).

(a) Compacter and Compacter++ adapters (n = 4, reduction 32, lr 3e-3) trained on the
    pretrained MiniLM-L6 backbone, against full fine-tuning (the teacher itself: every
    parameter trained, lr 1e-4): accuracy and the trained fraction of parameters.
(b) A MiniALBERT student (E = 128, 6 repeats of one shared layer, hidden 384, adapters with
    reduction 16) distilled from the teacher with the original recipe (5 · soft KD at T = 1
    + 3 · (attention KL + hidden cosine), uniform layer map), against the same-depth-budget
    KD students of the distillation table (their saved runs are re-measured here): unique
    and executed parameters, accuracy, and sequences/s measured against the teacher in one
    interleaved run.

Writes ``benchmarks/results/compacter_minialbert.json`` and the block between the
``compacter_minialbert`` markers in ``benchmarks/RESULTS.md``.

    python benchmarks/compacter_minialbert.py --teacher runs/teacher [--epochs 2] [--only compacter,minialbert,compacter@6#1]

A run name is ``NAME[@EPOCHS][#SEED][~lrLR]`` (``compacter@6#1~lr1e-2``); ``full`` is full
fine-tuning with the teacher's recipe (its seed 0 is the teacher), so ``full#1,full#2`` and
``compacter@6#1,compacter@6#2`` compare the two recipes over seeds (the table below the main one).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from minidistill.cli import (DataSection, DistillConfig, FinetuneConfig, ModelSection, ObjectivesSection,
                             StudentSection, TransferSection, finetune, load_classifier, load_splits)
from minidistill.compress.minialbert import MiniAlbertSettings
from minidistill.data import Tokenizer
from minidistill.models.stats import model_stats
from minidistill.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import HERE, machine, paired_gap, parse_args, run_rows, throughput, today, write_block  # noqa: E402

RESULTS = HERE / "results" / "compacter_minialbert.json"


def finetune_rows(epochs: int, max_length: int) -> dict:
    """name → (label, FinetuneConfig) for the adapter rows and for full fine-tuning with the
    teacher's own recipe (``full``; with seed 0 it retrains the teacher, other seeds measure how
    much full fine-tuning itself varies)."""
    out = {}
    for name, pooling in (("full", "cls"), ("full-mean", "mean")):
        read = " on the mean over tokens" if pooling == "mean" else ""
        out[name] = (f"full fine-tuning (every parameter){read}, lr 1e-4, {epochs} epochs", FinetuneConfig(
            model=ModelSection(path="minilm-l6"), data=DataSection(task="rotten_tomatoes"), classifier_pooling=pooling,
            train=TrainConfig(lr=1e-4, epochs=epochs, max_length=max_length, batch_size=32, warmup_ratio=0.1,
                              eval_every=267, progress=False)))
    for name, label, pooler, reduction, pooling, rank in (
            ("compacter", "Compacter (after attention and FFN)", False, 32, "cls", 1),
            ("compacter++", "Compacter++ (after FFN)", False, 32, "cls", 1),
            ("compacter-pooler", "Compacter (after attention and FFN) + trained pooler", True, 32, "cls", 1),
            ("compacter-r8", "Compacter (after attention and FFN)", False, 8, "cls", 1),
            ("compacter-mean", "Compacter (after attention and FFN) on the mean over tokens", False, 32, "mean", 1),
            ("compacter++-mean", "Compacter++ (after FFN) on the mean over tokens", False, 32, "mean", 1),
            ("compacter-rank4", "Compacter (after attention and FFN), fast weights of rank 4", False, 32, "cls", 4),
            ("houlsby", "dense Houlsby adapters (after attention and FFN)", False, 32, "cls", 1)):
        kind = name.partition("-")[0]
        n = ", n = 4" if kind.startswith("compacter") else ""
        lr = 3e-3 if kind.startswith("compacter") else 1e-3
        out[name] = (f"{label}{n}, reduction {reduction}, lr {_lr(lr)}, {epochs} epochs", FinetuneConfig(
            model=ModelSection(path="minilm-l6"), data=DataSection(task="rotten_tomatoes"),
            adapters=kind, train_pooler=pooler, adapter_reduction=reduction, classifier_pooling=pooling,
            phm_rank=rank,
            train=TrainConfig(lr=lr, epochs=epochs, max_length=max_length, batch_size=32, warmup_ratio=0.06,
                              eval_every=320, progress=False)))
    return out


def distill_rows(epochs: int, max_length: int, cache_dir: str) -> dict:
    """name → (label, DistillConfig) for the MiniALBERT rows."""
    recipe = ObjectivesSection(soft_kd=5.0, temperature=1.0, attention_kl=3.0, hidden_cosine=3.0)
    train = TrainConfig(lr=2e-4, epochs=epochs, max_length=max_length, batch_size=32, eval_every=320, progress=False)
    with_labels = dataclasses.replace(recipe, task=1.0)
    out = {}
    for name, kind, e, objectives, copies, extra in (
            ("minialbert", "dense", 128, recipe, 0, ""),
            ("minialbert-phm", "phm", 128, recipe, 0, ""),
            ("minialbert-e96", "dense", 96, recipe, 0, ""),
            ("minialbert-e96-task", "dense", 96, with_labels, 0, " + 1 · cross-entropy on the labels"),
            ("minialbert-e96-aug", "dense", 96, recipe, 2, ", transfer set ×3 (2 masked/replaced copies)")):
        out[name] = (f"MiniALBERT E {e}, 6 × shared layer, {kind} adapters /16, original recipe{extra}, {epochs} epochs",
                     DistillConfig(student=StudentSection(kind="minialbert"),
                                   minialbert=MiniAlbertSettings(embedding_size=e, repeats=6, adapter_reduction=16,
                                                                 adapter_kind=kind),
                                   objectives=objectives, transfer=TransferSection(augment_copies=copies),
                                   train=train, data=DataSection(task="rotten_tomatoes"), cache_dir=cache_dir))
    return out


def variant(name: str, epochs: int) -> tuple[str, int, int, float | None]:
    """``base@E#S~lrX`` → (base, E, S, X): a row's base name, its epochs (default ``epochs``), its
    seed (default 0) and its learning rate (default None: the row's own); each part optional."""
    rest, _, lr = name.partition("~lr")
    rest, _, seed = rest.partition("#")
    base, _, ep = rest.partition("@")
    try:
        return base, int(ep) if ep else epochs, int(seed) if seed else 0, float(lr) if lr else None
    except ValueError:
        raise SystemExit(f"bad run name {name!r}: expected NAME[@EPOCHS][#SEED][~lrLR], e.g. compacter@6#1~lr1e-2") from None


def _adjusted(row: tuple, seed: int, lr: float | None) -> tuple:
    """(label, config) with the training seed and learning rate set; the label says what changed."""
    label, cfg = row
    cfg.train.seed = seed
    if lr is not None:
        old = f"lr {_lr(cfg.train.lr)}"
        cfg.train.lr = lr
        label = label.replace(old, f"lr {_lr(lr)}") if old in label else f"{label}, lr {_lr(lr)}"
    return (f"{label}, seed {seed}" if seed else label), cfg


def _lr(x: float) -> str:
    """A learning rate the way the labels write it: 0.003 → '3e-3'."""
    mantissa, _, exponent = f"{x:.3e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def run_finetunes(plan: dict, names: list, out: str, done: dict) -> dict:
    """Run the asked adapter rows, saving the results after each."""
    for name in names:
        label, cfg = plan[name]
        cfg.output_dir = f"{out}/{name}"
        print(f"== {name}: {label}", flush=True)
        r = finetune(cfg)
        done[name] = {"label": label, "dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"],
                      "parameters": r["parameters"], "trained": r["trained_parameters"], "wall_s": r["train_seconds"],
                      "dir": r["output_dir"]}
        print(f"   dev {done[name]['dev']:.4f} test {done[name]['test']:.4f} in {r['train_seconds']:.0f} s", flush=True)
        RESULTS.write_text(json.dumps(done, indent=1))
    return done


def main() -> None:
    args = parse_args(__doc__, 2, "runs/compacter_minialbert")
    teacher_dir = Path(args.teacher)
    ft = finetune_rows(args.epochs, args.max_length)
    di = distill_rows(args.epochs, args.max_length, f"{args.out}/cache")
    names = [n for n in args.only.split(",") if n] if args.only is not None else ["compacter", "compacter++", "minialbert"]
    for n in names:  # ``compacter@6#1~lr1e-2``: the row with 6 epochs, seed 1, lr 1e-2, kept as its own row
        base, ep, seed, lr = variant(n, args.epochs)
        if base in ft and n not in ft:
            ft[n] = _adjusted(finetune_rows(ep, args.max_length)[base], seed, lr)
        elif base in di and n not in di:
            di[n] = _adjusted(distill_rows(ep, args.max_length, f"{args.out}/cache")[base], seed, lr)
    unknown = [n for n in names if n not in ft and n not in di]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {', '.join([*ft, *di])}")
    RESULTS.parent.mkdir(exist_ok=True)
    done = run_rows(di, [n for n in names if n in di], teacher_dir, args.out, RESULTS)
    done = run_finetunes(ft, [n for n in names if n in ft], args.out, done)
    rows = measure(done, teacher_dir, args.max_length)
    meta = {"date": today(), "machine": machine(), "teacher": str(teacher_dir), "epochs": args.epochs,
            "max_length": args.max_length, "teacher_epochs": _teacher_epochs(teacher_dir, args.epochs)}
    RESULTS.write_text(json.dumps({**done, "_table": rows, "_meta": meta}, indent=1, default=str))
    if not args.no_write:
        write_block("compacter_minialbert", header(meta) + table(rows) + seed_table(rows, args.epochs,
                                                                                 meta["teacher_epochs"]))


def measure(done: dict, teacher_dir: Path, max_length: int) -> list[dict]:
    """Every row with its counts, and sequences/s of every model in one interleaved run."""
    from minidistill.train import evaluate, predict

    _, dev, test = load_splits(DataSection(task="rotten_tomatoes"))
    tok = Tokenizer.from_pretrained(teacher_dir)
    teacher = load_classifier(teacher_dir)
    t_metrics = json.loads((teacher_dir / "metrics.json").read_text()) if (teacher_dir / "metrics.json").is_file() else {}
    entries = {"teacher": {"label": "full fine-tuning (the teacher: MiniLM-L6, every parameter)",
                           "model": teacher, "wall_s": t_metrics.get("train_seconds", float("nan"))}}
    kd_json = HERE / "results" / "distill_table.json"  # the distillation table's finished rows
    kd = json.loads(kd_json.read_text()) if kd_json.is_file() else {}
    for name, label in (("kd-lower", "2-layer KD student (distillation table, 1 epoch)"),
                        ("bilstm", "BiLSTM XtremeDistil student (distillation table)")):
        if name in kd and Path(kd[name]["dir"]).is_dir():
            entries[name] = {"label": label, "model": load_classifier(kd[name]["dir"]), "wall_s": kd[name]["wall_s"],
                             "dev": kd[name]["dev"], "test": kd[name]["test"]}
    for name in sorted(n for n in done if not n.startswith("_")):
        if Path(done[name]["dir"]).is_dir():
            entries[name] = {**done[name], "model": load_classifier(done[name]["dir"])}
    t_correct = (predict(teacher, tok, test, 64, max_length).argmax(-1) == test.labels).astype(float)  # (N,)
    t_test = float(t_correct.mean())
    entries["teacher"].update(dev=evaluate(teacher, tok, dev, 64, max_length)["accuracy"], test=t_test)
    speed = throughput({n: e["model"] for n, e in entries.items()}, tok, test, max_length)
    rows = []
    for name, e in entries.items():
        m = e["model"]
        st = model_stats(m, max_length) if hasattr(m.config, "num_attention_heads") else {
            "unique_parameters": m.num_parameters(), "executed_parameters": m.num_parameters(), "flops_per_token": None}
        trained = e.get("trained", m.num_parameters())
        rows.append({"name": name, "label": e["label"], "unique": st["unique_parameters"],
                     "executed": st["executed_parameters"], "trained": trained,
                     "trained_fraction": trained / st["unique_parameters"], "dev": e["dev"], "test": e["test"],
                     "retention": 100 * e["test"] / t_test, "seq_per_s": speed[name],
                     "speedup": speed[name] / speed["teacher"], "wall_s": e["wall_s"],
                     "unique_vs_teacher": st["unique_parameters"] / teacher.num_parameters()})
        r = rows[-1]
        r["gap"], r["gap_lo"], r["gap_hi"] = paired_gap(m, t_correct, tok, test, max_length)
        print(f"{r['label'][:60]:60s} test {r['test']:.4f} ret {r['retention']:5.1f}% unique {r['unique'] / 1e6:.2f}M "
              f"({100 * r['unique_vs_teacher']:.1f}%) trained {100 * r['trained_fraction']:.3f}% ×{r['speedup']:.2f}")
    return rows


def header(meta: dict) -> list[str]:
    """The block's title and setting."""
    return [f"## Compacter and MiniALBERT: rotten_tomatoes, MiniLM-L6 · {meta['date']} · {meta['machine']}", "",
            f"Epochs as each row says (default {meta['epochs']}), max length {meta['max_length']}, batch 32; every run "
            "keeps its best dev checkpoint (dev evaluated every 320 steps, one epoch of the labelled set, and every 267 "
            "steps for full fine-tuning, as the teacher was trained; the first 2-epoch rows and MiniALBERT E 128 were "
            "evaluated at the end only). Seeds: rows without one use seed 0 (initialisation of the new weights and batch "
            "order). Trained = parameters the optimiser updates (adapters, "
            "LayerNorms and classifier for Compacter, plus the pooler where the row says so); unique = stored; "
            "executed = used per forward pass (MiniALBERT's shared layer counted 6 times). Δ test = test accuracy minus "
            "the teacher's, in points, with a 95% paired-bootstrap interval over the test sentences (2,000 resamples). "
            "Sequences/s: test set, batch 64, every model in one run, interleaved over 3 rounds, median.", ""]


def table(rows: list[dict]) -> list[str]:
    """The markdown table."""
    lines = ["| model | trained | unique params | executed | dev acc | test acc | Δ test (95% CI) | retention | seq/s "
             "| speed-up | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wall = "—" if r["wall_s"] != r["wall_s"] else f"{r['wall_s']:.0f} s"
        lines.append(f"| {r['label']} | {r['trained']:,} ({100 * r['trained_fraction']:.2f}%) | {r['unique'] / 1e6:.2f}M "
                     f"({100 * r['unique_vs_teacher']:.1f}%) | {r['executed'] / 1e6:.2f}M | {r['dev']:.4f} | "
                     f"{r['test']:.4f} | {_gap(r)} | {r['retention']:.1f}% | {r['seq_per_s']:.0f} | "
                     f"{r['speedup']:.2f}× | {wall} |")
    return lines


def _teacher_epochs(teacher_dir: Path, default: int) -> int:
    """The epochs the teacher was fine-tuned for, from its ``metrics.json`` (``default`` if absent)."""
    path = teacher_dir / "metrics.json"
    if not path.is_file():
        return default
    return json.loads(path.read_text()).get("config", {}).get("train", {}).get("epochs", default)


def seed_table(rows: list[dict], epochs: int, teacher_epochs: int) -> list[str]:
    """Mean ± sample standard deviation over seeds of every recipe run with two or more seeds
    (the teacher is seed 0 of full fine-tuning for ``teacher_epochs``), and each mean's gap to
    full fine-tuning's mean test accuracy with its standard error: how a recipe compares once
    seed noise is averaged. ``epochs`` is the default of run names without ``@E``."""
    groups: dict[str, list[dict]] = {}
    full_key = f"full@{teacher_epochs}"
    for r in rows:
        if r["name"] == "teacher":
            key = full_key
        elif r["name"] in ("kd-lower", "bilstm"):
            continue
        else:
            base, ep, _, lr = variant(r["name"], epochs)
            key = f"{base}@{ep}" + (f"~lr{_lr(lr)}" if lr is not None else "")
        groups.setdefault(key, []).append(r)
    multi = {k: v for k, v in groups.items() if len(v) > 1}
    full = groups.get(full_key, [])
    if not multi or len(full) < 2:
        return []
    f_test = np.array([r["test"] for r in full])  # (seeds,)
    lines = ["", "Over seeds (mean ± standard deviation; Δ = mean test minus full fine-tuning's mean test, "
             "± its standard error):", "",
             "| recipe | seeds | dev acc | test acc | Δ test vs full fine-tuning |", "|---|---:|---:|---:|---:|"]
    for key, rs in sorted(multi.items(), key=lambda kv: kv[0] != full_key):
        dev, test = np.array([r["dev"] for r in rs]), np.array([r["test"] for r in rs])  # (seeds,)
        label = min(rs, key=lambda r: len(r["label"]))["label"].split(", seed")[0]
        if key == full_key:
            label, gap = f"full fine-tuning, lr 1e-4, {teacher_epochs} epochs", "—"
        else:
            se = np.sqrt(test.var(ddof=1) / len(test) + f_test.var(ddof=1) / len(f_test))
            gap = f"{100 * (test.mean() - f_test.mean()):+.2f} ± {100 * se:.2f}"
        lines.append(f"| {label} | {len(rs)} | {dev.mean():.4f} ± {dev.std(ddof=1):.4f} | "
                     f"{test.mean():.4f} ± {test.std(ddof=1):.4f} | {gap} |")
    return lines


def _gap(r: dict) -> str:
    """The paired gap to the teacher in points, '—' for the teacher itself."""
    if r["name"] == "teacher":
        return "—"
    return f"{r['gap']:+.1f} ({r['gap_lo']:+.1f}, {r['gap_hi']:+.1f})"


if __name__ == "__main__":
    main()
