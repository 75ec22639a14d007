"""XtremeDistil's NER table at our scale: CoNLL-2003 English, a fine-tuned MiniLM-L6 teacher and
its students, entity F1 over seeds, retention, parameters and sequences/s in one interleaved run.

Rows (every student learns from the teacher only: the transfer set is the training sentences
without their tags, as in XtremeDistil's setting where unlabelled text is plentiful):

* ``kd-2l``: a 2-layer transformer (the teacher's layers 0 and 1), soft KD (T = 2) + hidden-state
  MSE on every real token (uniform map: student state l ↔ teacher state 3l);
* ``bilstm-hard`` / ``bilstm-soft``: the per-token BiLSTM (the teacher's word embeddings, 1 layer,
  200 units per direction), hard distillation (the teacher's tag of every word) or soft (T = 2);
* ``wid-192``: WID from the teacher to 6 layers × 192 (6 heads, FFN 768), soft KD, folded (a WID
  step costs several plain ones on a CPU: about 2 s against 0.5 s for the teacher's, on 2 cores);
* ``theseus-3``: BERT-of-Theseus to 3 layers (constant replacement), soft KD.

Writes ``benchmarks/results/ner.json`` and the ``ner`` block of RESULTS.md.

    python benchmarks/ner.py [--seeds 0,1] [--only kd-2l,bilstm-hard] [--teacher-epochs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minidistill.cli import (DataSection, DistillConfig, FinetuneConfig, ModelSection, ObjectivesSection,
                             StudentSection, distill_run, finetune, load_classifier, load_splits)
from minidistill.compress.theseus import TheseusSettings
from minidistill.compress.xtremedistil import BiLSTMSettings
from minidistill.data import Tokenizer
from minidistill.train import TrainConfig, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import HERE, machine, throughput, today, write_block  # noqa: E402

DATA = DataSection(task="conll2003")
MAX_LENGTH = 64


def teacher_run(out: Path, epochs: int) -> Path:
    """Fine-tune MiniLM-L6 on CoNLL-2003 (once; an existing folder is reused)."""
    if (out / "config.json").is_file():
        return out
    cfg = FinetuneConfig(model=ModelSection(path="minilm-l6"), data=DATA, output_dir=str(out),
                         train=TrainConfig(lr=1e-4, epochs=epochs, batch_size=32, max_length=MAX_LENGTH, progress=False))
    r = finetune(cfg)
    print(f"teacher: dev F1 {r['dev']['f1']:.4f} test F1 {r['test']['f1']:.4f} in {r['train_seconds']:.0f} s", flush=True)
    return out


def plan(epochs: int) -> dict:
    """name → (label, DistillConfig builder of a seed)."""
    def cfg(seed, lr=1e-4, ep=epochs, recipe="single", **kw):
        return DistillConfig(data=DATA, recipe=recipe, cache_dir="runs/ner/cache",
                             train=TrainConfig(lr=lr, epochs=ep, batch_size=32, max_length=MAX_LENGTH, seed=seed,
                                               progress=False),
                             **kw)

    soft = ObjectivesSection(soft_kd=1.0, temperature=2.0)
    return {
        "kd-2l": ("2-layer transformer (layers 0,1), soft KD + hidden MSE",
                  lambda s: cfg(s, student=StudentSection(num_layers=2, init="lower", seed=s),
                                objectives=ObjectivesSection(soft_kd=1.0, temperature=2.0, hidden_mse=1.0))),
        "bilstm-hard": ("per-token BiLSTM 1×200, hard distillation",
                        lambda s: cfg(s, lr=2e-3, recipe="xtremedistil-hard", bilstm=BiLSTMSettings(hidden_size=200),
                                      student=StudentSection(kind="bilstm", seed=s))),
        "bilstm-soft": ("per-token BiLSTM 1×200, soft distillation (T = 2)",
                        lambda s: cfg(s, lr=2e-3, recipe="xtremedistil-soft", bilstm=BiLSTMSettings(hidden_size=200),
                                      student=StudentSection(kind="bilstm", seed=s),
                                      objectives=ObjectivesSection(temperature=2.0))),
        "wid-192": ("WID → 6 layers × 192 (6 heads, FFN 768), folded",
                    lambda s: cfg(s, lr=2e-4, student=StudentSection(kind="wid", hidden_size=192, num_attention_heads=6,
                                                                     intermediate_size=768, seed=s), objectives=soft)),
        "theseus-3": ("BERT-of-Theseus → 3 layers, constant p = 0.5",
                      lambda s: cfg(s, student=StudentSection(kind="theseus", num_layers=3, seed=s),
                                    theseus=TheseusSettings(replace="constant"), objectives=soft)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated rows (default: all)")
    ap.add_argument("--out", default="runs/ner")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    teacher_dir = teacher_run(out / "teacher", args.teacher_epochs)
    rows = plan(args.epochs)
    names = args.only.split(",") if args.only else list(rows)
    seeds = [int(s) for s in args.seeds.split(",")]
    results_path = HERE / "results" / "ner.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else {}
    done = {k: v for k, v in done.items() if not k.startswith("_")}
    for seed in seeds:  # every method's first seed before any second one
        for name in names:
            key = f"{name}@{seed}"
            if key in done:
                continue
            label, make = rows[name]
            cfg = make(seed)
            cfg.teacher = ModelSection(path=str(teacher_dir))
            cfg.output_dir = str(out / key)
            cfg.overwrite = True
            print(f"== {key}: {label}", flush=True)
            r = distill_run(cfg, announce=lambda *a: None)
            done[key] = {"name": name, "seed": seed, "label": label, "dev_f1": r["dev"]["f1"], "test_f1": r["test"]["f1"],
                         "parameters": r["parameters"], "wall_s": r["train_seconds"], "steps": r["steps"],
                         "dir": r["output_dir"]}
            print(f"   dev F1 {r['dev']['f1']:.4f} test F1 {r['test']['f1']:.4f} in {r['train_seconds']:.0f} s", flush=True)
            results_path.parent.mkdir(exist_ok=True)
            results_path.write_text(json.dumps(done, indent=1))
    table = measure(done, teacher_dir, list(rows))
    meta = {"date": today(), "machine": machine(), "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
            "max_length": MAX_LENGTH}
    results_path.write_text(json.dumps({**done, "_table": table, "_meta": meta}, indent=1))
    if not args.no_write:
        write(table, meta)


def measure(done: dict, teacher_dir: Path, order: list) -> list[dict]:
    """Per method: mean and spread of test F1 over its seeds, retention against the teacher, and
    sentences/s of its first seed's model beside the teacher's in one interleaved run."""
    _, dev, test = load_splits(DATA)
    tok = Tokenizer.from_pretrained(teacher_dir)
    teacher = load_classifier(teacher_dir)
    t_test = evaluate(teacher, tok, test, 64, MAX_LENGTH)["f1"]
    t_dev = evaluate(teacher, tok, dev, 64, MAX_LENGTH)["f1"]
    by_name = {}
    for r in done.values():
        by_name.setdefault(r["name"], []).append(r)
    names = [n for n in order if n in by_name]
    timing = test.select(range(512))
    models = {"teacher": teacher, **{n: load_classifier(sorted(by_name[n], key=lambda r: r["seed"])[0]["dir"])
                                     for n in names}}
    speed = throughput(models, tok, timing, MAX_LENGTH)
    table = [{"name": "teacher", "label": "teacher: MiniLM-L6 (6 layers × 384), fine-tuned", "seeds": 1,
              "parameters": teacher.num_parameters(), "dev_f1": t_dev, "test_f1": t_test, "test_f1_sd": 0.0,
              "retention": 100.0, "seq_per_s": speed["teacher"], "speedup": 1.0}]
    for n in names:
        rs = by_name[n]
        f1s = [r["test_f1"] for r in rs]
        table.append({"name": n, "label": rs[0]["label"], "seeds": len(rs), "parameters": rs[0]["parameters"],
                      "dev_f1": float(np.mean([r["dev_f1"] for r in rs])), "test_f1": float(np.mean(f1s)),
                      "test_f1_sd": float(np.std(f1s)), "retention": 100 * float(np.mean(f1s)) / t_test,
                      "seq_per_s": speed[n], "speedup": speed[n] / speed["teacher"],
                      "wall_s": float(np.mean([r["wall_s"] for r in rs]))})
    for r in table:
        print(f"{r['label']:55s} F1 {r['test_f1']:.4f}±{r['test_f1_sd']:.4f} ret {r['retention']:5.1f}% "
              f"{r['seq_per_s']:6.0f} sent/s ×{r['speedup']:.2f}")
    return table


def write(table: list, meta: dict) -> None:
    """The ``ner`` block of RESULTS.md."""
    lines = [f"## NER: XtremeDistil's table at our scale (CoNLL-2003 English) · {meta['date']} · {meta['machine']}",
             "",
             f"Teacher: MiniLM-L6 fine-tuned {meta['teacher_epochs']} epochs on the 14,041 training sentences (lr 1e-4, "
             f"batch 32); students: {meta['epochs']} epochs on the same sentences without tags (the transfer set), "
             f"from the teacher only. Max length {meta['max_length']} (longer sentences are split into overlapping "
             "windows). Entity F1 (conlleval's rules) on the 3,453 test sentences, mean ± standard deviation over "
             "seeds; speed: sentences/s on 512 test sentences, batch 64, medians of 3 interleaved rounds "
             "(`benchmarks/ner.py`).",
             "",
             "| model | seeds | params | dev F1 | test F1 | retention | sent/s | speed-up | wall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") else "—"
        lines.append(f"| {r['label']} | {r['seeds']} | {r['parameters'] / 1e6:.1f}M | {r['dev_f1']:.4f} | "
                     f"{r['test_f1']:.4f} ± {r['test_f1_sd']:.4f} | {r['retention']:.1f}% | {r['seq_per_s']:.0f} | "
                     f"{r['speedup']:.2f}× | {wall} |")
    rows = {r["name"]: r for r in table}

    def verdict(name, retention, speedup=None):
        r = rows.get(name)
        if r is None:
            return f"`{name}` not run"
        ok = r["retention"] >= retention and (speedup is None or r["speedup"] >= speedup)
        got = f"{r['retention']:.1f}%" + (f" at {r['speedup']:.1f}×" if speedup is not None else "")
        want = f"≥ {retention}%" + (f" at ≥ {speedup}×" if speedup is not None else "")
        return f"{r['label']}: {got} ({'met' if ok else 'missed'}; target {want})"

    best_lstm = max((n for n in ("bilstm-hard", "bilstm-soft") if n in rows), key=lambda n: rows[n]["retention"],
                    default="bilstm-hard")
    lines += ["", "Targets (XtremeDistil's regime): " + verdict("kd-2l", 95) + "; " + verdict(best_lstm, 90, 10) + "."]
    write_block("ner", lines)


if __name__ == "__main__":
    main()
