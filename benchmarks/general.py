"""General (task-agnostic) students against task-specific ones at the same size: distil on the
``debian-docs`` corpus with the MiniLM-L6 teacher and its fitted masked-LM head, fine-tune each
general student on rotten_tomatoes with the teacher's recipe, and compare with task-specific
students of the same shapes, over seeds, in one table.

General rows (``minidistill general`` presets; every one the same steps, corpus and length):

* ``kd`` / ``kd-hidden`` / ``kd-attention`` / ``minilm``: 2 layers × 384, lower-layer init:
  KD (T 1) on the masked-LM logits at the masked positions + the student's MLM loss, + hidden
  MSE, + attention KL; MiniLM: the last layer's attention and value relations only;
* ``kd-192``: KD as ``kd``, 6 layers × 192 (PCA embeddings, fresh layers): WID's size;
* ``wid``: WID to 6 × 192, the MLM loss only, folded to a plain BertForMaskedLM;
* ``minialbert``: 1·MLM + 3·(attention KL + hidden cosine) + 5·KL, E 128, 6 repeats.

Task-specific rows (``minidistill distill`` from the rotten_tomatoes teacher): ``ts-kd`` (2
layers, soft KD + CE, the ``student`` preset), ``ts-kd-192`` (6 × 192 KD), ``ts-wid`` (WID
6 × 192, soft KD), ``ts-minialbert`` (E 128, 6 repeats, the original objectives).

Every row is resumable: finished ones are kept in ``benchmarks/results/general.json``;
``--only`` and ``--seeds`` choose what runs. Writes the ``general`` block of RESULTS.md.

    python benchmarks/general.py [--steps 400] [--seeds 0,1] [--only kd,wid] [--teacher-mlm runs/teacher-mlm]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from minidistill.cli import PRESETS, DistillConfig, FinetuneConfig, GeneralConfig, distill_run, finetune, general_run
from minidistill.config_io import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import HERE, machine, today, write_block  # noqa: E402

RESULTS = HERE / "results" / "general.json"
SIZE_192 = {"num_layers": 6, "hidden_size": 192, "num_attention_heads": 6, "intermediate_size": 768}

#: general rows: name → (label, preset, extra config)
GENERAL = {
    "kd": ("2L × 384: KD on MLM logits + MLM", "kd", {}),
    "kd-hidden": ("2L × 384: KD + MLM + hidden MSE", "kd-hidden", {}),
    "kd-attention": ("2L × 384: KD + MLM + attention KL", "kd-attention", {}),
    "minilm": ("2L × 384: MiniLM (last-layer attention + value relations)", "minilm", {}),
    "kd-192": ("6L × 192: KD on MLM logits + MLM (PCA embeddings)", "kd", {"student": {**SIZE_192, "init": "lower"}}),
    "wid": ("WID → 6L × 192, MLM only, folded", "wid", {}),
    "minialbert": ("MiniALBERT E 128 × 6 repeats: 1·MLM + 3·(att KL + hid cos) + 5·KL", "minialbert", {}),
}
#: task-specific rows: name → (label, preset or None, extra config)
TASK = {
    "ts-kd": ("2L × 384: soft KD + CE (the `student` preset)", "student", {}),
    "ts-kd-192": ("6L × 192: soft KD (PCA embeddings), 2 epochs", None,
                  {"student": {**SIZE_192, "init": "lower"}, "objectives": {"soft_kd": 1.0, "temperature": 2.0},
                   "train": {"lr": 2e-4, "epochs": 2, "batch_size": 32, "max_length": 64, "warmup_ratio": 0.1}}),
    "ts-wid": ("WID → 6L × 192, soft KD, 2 epochs, folded", None,
               {"student": {"kind": "wid", "hidden_size": 192, "num_attention_heads": 6, "intermediate_size": 768},
                "objectives": {"soft_kd": 1.0, "temperature": 2.0},
                "train": {"lr": 2e-4, "epochs": 2, "batch_size": 32, "max_length": 64, "warmup_ratio": 0.1}}),
    "ts-minialbert": ("MiniALBERT E 128 × 6 repeats, original objectives, 2 epochs", None,
                      {"student": {"kind": "minialbert"}, "minialbert": {"embedding_size": 128, "repeats": 6},
                       "objectives": {"soft_kd": 5.0, "temperature": 1.0, "attention_kl": 3.0, "hidden_cosine": 3.0,
                                      "hidden_map": "layers", "attention_map": "layers"},
                       "train": {"lr": 2e-4, "epochs": 2, "batch_size": 32, "max_length": 64, "warmup_ratio": 0.1}}),
}
#: which rows compare with which (general → task-specific of the same shape)
PAIRS = {"kd": "ts-kd", "kd-hidden": "ts-kd", "kd-attention": "ts-kd", "minilm": "ts-kd", "kd-192": "ts-kd-192",
         "wid": "ts-wid", "minialbert": "ts-minialbert"}


def _overrides(table: dict) -> list:
    """``{"a": {"b": 1}}`` → ``["--a.b=1"]`` (the CLI's override form, so presets merge as on the command line)."""
    out = []
    for section, values in table.items():
        if isinstance(values, dict):
            out += [f"--{section}.{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in values.items()]
        else:
            out.append(f"--{section}={values}")
    return out


def _save(done: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(done, indent=1))
    tmp.replace(RESULTS)  # atomic: a killed run never leaves a half-written file


def run_general(name, args, done) -> dict:
    """The general student of row ``name`` (once; its metrics are kept)."""
    key = f"general:{name}"
    if key in done:
        return done[key]
    label, preset, extra = GENERAL[name]
    out = Path(args.out) / "general" / name
    base = {**PRESETS["general"][preset][1]}
    cfg = load_config(GeneralConfig, None, _overrides(extra) + [
        f"--teacher.path={args.teacher_mlm}", f"--teacher.backend={args.backend}", "--corpus.train=debian-docs",
        f"--corpus.seq_len={args.seq_len}", f"--corpus.cache_dir={args.out}/corpus-cache",
        f"--corpus.max_held_out_batches={args.held_out_batches}", f"--train.max_steps={args.steps}",
        "--train.progress=false", f"--output_dir={out}", "--overwrite=true"], base=base)
    print(f"== {key}: {label}", flush=True)
    r = general_run(cfg, announce=lambda *a: print("  ", *a, flush=True))
    done[key] = {"label": label, "dir": str(out), "parameters": r["parameters"], "steps": r["steps"],
                 "wall_s": r["train_seconds"], "held_out_mlm": r.get("held_out_mlm"),
                 "teacher_held_out_mlm": r.get("teacher_held_out_mlm")}
    m = r.get("held_out_mlm")
    if m:
        print(f"   held-out masked accuracy {m['masked_accuracy']:.4f}, perplexity {m['perplexity']:.1f}; "
              f"{r['train_seconds']:.0f} s", flush=True)
    _save(done)
    return done[key]


def run_finetune(name, seed, args, done) -> None:
    """Fine-tune the general student of ``name`` on rotten_tomatoes with the teacher's recipe."""
    key = f"ft:{name}@{seed}"
    if key in done:
        return
    g = run_general(name, args, done)
    cfg = load_config(FinetuneConfig, None, [
        f"--model.path={g['dir']}", f"--model.backend={args.backend}", f"--train.seed={seed}", "--train.progress=false",
        f"--output_dir={Path(args.out) / 'ft' / f'{name}@{seed}'}", "--overwrite=true"],
        base=PRESETS["finetune"]["teacher"][1])  # the teacher's recipe
    print(f"== {key}", flush=True)
    r = finetune(cfg, announce=lambda *a: None)
    done[key] = {"name": name, "seed": seed, "dev_acc": r["dev"]["accuracy"], "test_acc": r["test"]["accuracy"],
                 "wall_s": r["train_seconds"], "steps": r["steps"], "parameters": r["parameters"]}
    print(f"   dev {r['dev']['accuracy']:.4f} test {r['test']['accuracy']:.4f} in {r['train_seconds']:.0f} s", flush=True)
    _save(done)


def run_task_specific(name, seed, args, done) -> None:
    """The task-specific student of row ``name`` distilled from the rotten_tomatoes teacher."""
    key = f"ts:{name}@{seed}"
    if key in done:
        return
    label, preset, extra = TASK[name]
    base = {**PRESETS["distill"][preset][1]} if preset else {}
    cfg = load_config(DistillConfig, None, _overrides(extra) + [
        f"--teacher.path={args.teacher}", f"--teacher.backend={args.backend}", f"--train.seed={seed}",
        f"--student.seed={seed}", "--train.progress=false", f"--output_dir={Path(args.out) / 'ts' / f'{name}@{seed}'}",
        "--overwrite=true"], base=base)
    print(f"== {key}: {label}", flush=True)
    r = distill_run(cfg, announce=lambda *a: None)
    done[key] = {"name": name, "seed": seed, "label": label, "dev_acc": r["dev"]["accuracy"],
                 "test_acc": r["test"]["accuracy"], "wall_s": r["train_seconds"], "steps": r["steps"],
                 "parameters": r["parameters"]}
    print(f"   dev {r['dev']['accuracy']:.4f} test {r['test']['accuracy']:.4f} in {r['train_seconds']:.0f} s", flush=True)
    _save(done)


def table(done: dict, teacher_acc: float | None) -> list[dict]:
    """One row per model kind with ≥ 1 finished seed: mean ± sd of test accuracy, retention, steps, wall."""
    rows = []
    for kind, names, labels in (("general", GENERAL, GENERAL), ("task-specific", TASK, TASK)):
        for name in names:
            prefix = "ft:" if kind == "general" else "ts:"
            runs = [v for k, v in done.items() if k.startswith(f"{prefix}{name}@")]
            if not runs:
                continue
            accs = [r["test_acc"] for r in runs]
            g = done.get(f"general:{name}", {}) if kind == "general" else {}
            rows.append({"name": name, "kind": kind, "label": labels[name][0], "seeds": len(runs),
                         "parameters": runs[0]["parameters"], "dev_acc": float(np.mean([r["dev_acc"] for r in runs])),
                         "test_acc": float(np.mean(accs)), "test_sd": float(np.std(accs)),
                         "retention": 100 * float(np.mean(accs)) / teacher_acc if teacher_acc else None,
                         "general_steps": g.get("steps"), "general_wall_s": g.get("wall_s"),
                         "held_out_mlm": g.get("held_out_mlm"),
                         "steps": runs[0]["steps"], "wall_s": float(np.mean([r["wall_s"] for r in runs]))})
    return rows


def write(rows: list, done: dict, meta: dict) -> None:
    """The ``general`` block of RESULTS.md, with the targets' verdicts."""
    tm = next((v.get("teacher_held_out_mlm") for k, v in done.items() if k.startswith("general:")
               and v.get("teacher_held_out_mlm")), None)
    lines = [f"## General (task-agnostic) students against task-specific ones · {meta['date']} · {meta['machine']}",
             "",
             f"Teacher: MiniLM-L6 with its masked-LM head fitted on `debian-docs` (`minidistill mlm-head`, encoder "
             f"frozen{'; held-out masked accuracy %.4f, perplexity %.1f' % (tm['masked_accuracy'], tm['perplexity']) if tm else ''}). "
             f"General students: {meta['steps']} steps of 32 sequences of {meta['seq_len']} tokens from `debian-docs` "
             "(15% dynamic masking), then fine-tuned on rotten_tomatoes with the teacher's recipe (lr 1e-4, 2 epochs, "
             "batch 32, length 64). Task-specific students: distilled from the rotten_tomatoes teacher "
             f"(test {meta['teacher_acc']:.4f}). Test accuracy mean ± sd over seeds (`benchmarks/general.py`).",
             "",
             "| student | kind | seeds | params | general: held-out MLM acc / ppl | general wall | test acc | retention | fine-tune / distil wall |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["held_out_mlm"]
        mlm = f"{m['masked_accuracy']:.3f} / {m['perplexity']:.0f}" if m else "—"
        gw = f"{r['general_wall_s']:.0f} s ({r['general_steps']} steps)" if r["general_wall_s"] else "—"
        ret = f"{r['retention']:.1f}%" if r["retention"] else "—"
        sd = f" ± {r['test_sd']:.4f}" if r["seeds"] > 1 else " (one seed)"
        lines.append(f"| {r['label']} | {r['kind']} | {r['seeds']} | {r['parameters'] / 1e6:.1f}M | {mlm} | {gw} | "
                     f"{r['test_acc']:.4f}{sd} | {ret} | {r['wall_s']:.0f} s |")
    by = {(r["kind"], r["name"]): r for r in rows}
    verdicts = []
    two = [by[("general", n)] for n in ("kd", "kd-hidden", "kd-attention", "minilm") if ("general", n) in by]
    if two and ("task-specific", "ts-kd") in by:
        best = max(two, key=lambda r: r["test_acc"])
        gap = 100 * (by[("task-specific", "ts-kd")]["test_acc"] - best["test_acc"])
        verdicts.append(f"best general 2-layer ({best['name']}) "
                        f"{f'{gap:.1f} points below' if gap >= 0 else f'{-gap:.1f} points above'} the task-specific 2-layer "
                        f"({'met' if gap <= 1.0 else 'missed'}; target ≤ 1 point)")
    if ("general", "wid") in by and ("general", "kd-192") in by:
        d = 100 * (by[("general", "wid")]["test_acc"] - by[("general", "kd-192")]["test_acc"])
        verdicts.append(f"WID general vs KD general at 6 × 192: {d:+.1f} points ({'met' if d > 0 else 'missed'}; "
                        "target > 0)")
    if ("general", "kd-attention") in by and ("general", "kd-hidden") in by:
        d = 100 * (by[("general", "kd-attention")]["test_acc"] - by[("general", "kd-hidden")]["test_acc"])
        verdicts.append(f"attention vs hidden transfer: {d:+.1f} points ({'met' if d >= 0 else 'missed'}; target ≥ 0)")
    if verdicts:
        lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    gaps = pair_gaps(by)
    if gaps:
        lines += ["", "Each general student against the task-specific one of its shape (test accuracy, points): "
                  + "; ".join(f"{g} − {t}: {d:+.1f}" for g, t, d in gaps) + "."]
    write_block("general", lines)


def pair_gaps(by: dict) -> list[tuple[str, str, float]]:
    """``(general, task-specific, points)`` for every ``PAIRS`` entry whose two rows are both finished."""
    return [(g, t, 100 * (by[("general", g)]["test_acc"] - by[("task-specific", t)]["test_acc"]))
            for g, t in PAIRS.items() if ("general", g) in by and ("task-specific", t) in by]


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="runs/teacher", help="the rotten_tomatoes teacher (task-specific rows)")
    ap.add_argument("--teacher-mlm", default="runs/teacher-mlm", help="MiniLM-L6 with its fitted masked-LM head")
    ap.add_argument("--steps", type=int, default=400, help="general distillation steps (batch 32)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--held-out-batches", type=int, default=10)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--only", default=None, help="comma-separated rows (general names and ts-… names)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--out", default="runs/general-table")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON file of finished rows")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    RESULTS = Path(args.results)
    done = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    done = {k: v for k, v in done.items() if not k.startswith("_")}
    names = args.only.split(",") if args.only else list(GENERAL) + list(TASK)
    unknown = [n for n in names if n not in GENERAL and n not in TASK]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {', '.join([*GENERAL, *TASK])}")
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    for seed in seeds:  # every row's first seed before any second one
        for name in names:
            if name in GENERAL:
                run_finetune(name, seed, args, done)
            else:
                run_task_specific(name, seed, args, done)
    teacher_metrics = Path(args.teacher) / "metrics.json"
    teacher_acc = json.loads(teacher_metrics.read_text())["test"]["accuracy"] if teacher_metrics.is_file() else None
    rows = table(done, teacher_acc)
    meta = {"date": today(), "machine": machine(args.backend), "steps": args.steps, "seq_len": args.seq_len,
            "teacher_acc": teacher_acc or float("nan"), "seconds": time.perf_counter() - start}
    _save({**done, "_table": rows, "_meta": meta})
    for r in rows:
        print(f"{r['kind']:14s} {r['label']:60s} {r['test_acc']:.4f} ± {r['test_sd']:.4f} ({r['seeds']} seeds)")
    if not args.no_write and rows:
        write(rows, done, meta)


if __name__ == "__main__":
    main()
