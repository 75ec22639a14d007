"""The distillation experiment ("How to Distill your BERT" table at our scale, plus XtremeDistil).

On rotten_tomatoes with a fine-tuned MiniLM-L6 teacher (6 layers, hidden 384), distil:

* 2-layer students (hidden 384), initialised from the teacher's lower layers (0, 1) or upper
  layers (4, 5), each with soft KD on the logits (T = 2) alone ("vanilla KD") or together
  with hidden-state MSE, attention KL or MiniLM value relations (uniform layer maps);
* XtremeDistil's BiLSTM student with the staged recipe on unlabelled transfer data (the
  training texts and augmented copies).

For each: dev/test accuracy, retention (% of the teacher's test accuracy), parameters, and
test-set sequences/s measured against the teacher in one run (all models interleaved, 3
rounds, median), wall time of the distillation. Writes ``benchmarks/results/distill_table.json``
and the table between the ``distill_table`` markers in ``benchmarks/RESULTS.md``.

    python benchmarks/distill_table.py --teacher runs/teacher [--epochs 2] [--only kd-lower,bilstm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import minidistill as md
from minidistill.cli import (DataSection, DistillConfig, FinetuneConfig, ModelSection, ObjectivesSection,
                             StudentSection, TransferSection, finetune, load_classifier, load_splits)
from minidistill.data import Tokenizer
from minidistill.train import TrainConfig, predict

HERE = Path(__file__).resolve().parent

OBJECTIVES = {
    "kd": ("vanilla KD", {}),
    "hidden": ("KD + hidden MSE", {"hidden_mse": 1.0}),
    "attention": ("KD + attention KL", {"attention_kl": 1.0}),
    "minilm": ("KD + MiniLM value relation", {"value_relation": 1.0}),
}
INITS = {"lower": "0,1", "upper": "4,5"}


def runs(epochs: int, bilstm_epochs: int, max_length: int, cache_dir: str | None = None) -> dict:
    """name → (label, DistillConfig) for every row of the table."""
    out = {}
    for obj, (label, weights) in OBJECTIVES.items():
        for init, layers in INITS.items():
            cfg = DistillConfig(
                student=StudentSection(kind="transformer", num_layers=2, init=layers),
                objectives=ObjectivesSection(soft_kd=1.0, temperature=2.0, **weights),
                train=TrainConfig(lr=2e-4, epochs=epochs, max_length=max_length, batch_size=32, progress=False),
                data=DataSection(task="rotten_tomatoes"), cache_dir=cache_dir)
            out[f"{obj}-{init}"] = (f"2L {label}, init {init} ({layers})", cfg)
    stage = TrainConfig(lr=2e-3, epochs=bilstm_epochs, max_length=max_length, batch_size=32, warmup_ratio=0.05,
                        progress=False)
    out["bilstm"] = ("BiLSTM XtremeDistil staged", DistillConfig(
        student=StudentSection(kind="bilstm", lstm_hidden_size=128, embedding_size=64),
        recipe="xtremedistil", transfer=TransferSection(augment_copies=1, p_mask=0.1, p_replace=0.1),
        train=stage, data=DataSection(task="rotten_tomatoes"), cache_dir=cache_dir))
    return out


def throughput(models: dict, tok, data, max_length: int, rounds: int = 3) -> dict:
    """Test-set sequences/s of every model, interleaved over ``rounds``; medians."""
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            t0 = time.perf_counter()
            predict(model, tok, data, 64, max_length)
            times[name].append(time.perf_counter() - t0)
    return {name: len(data) / statistics.median(ts) for name, ts in times.items()}


def _wall(seconds) -> str:
    return "—" if seconds != seconds else f"{seconds:.0f} s"  # NaN: the teacher's row


def write_results_md(rows: list[dict], meta: dict) -> None:
    path = HERE / "RESULTS.md"
    lines = [
        "<!-- distill_table -->",
        f"## Distillation table: rotten_tomatoes, MiniLM-L6 teacher · {meta['date']} · {meta['machine']}",
        "",
        f"Teacher: fine-tuned MiniLM-L6 (`{meta['teacher']}`), max length {meta['max_length']}. Transformer "
        f"students: {meta['epochs']} epoch(s) on the labelled training set, AdamW lr 2e-4, soft KD (T = 2) in every "
        "row, intermediate losses added with weight 1 on uniform layer maps (hidden states 0,3,6 → 0,1,2; "
        "attention layers 2,5 → 0,1). BiLSTM: 128 units per direction, 64-d PCA embeddings from the teacher's, "
        f"transfer set = training texts + 1 augmented copy (10% masked, 10% replaced words), lr 2e-3, {meta['bilstm_epochs']} epoch(s) per stage/phase. "
        "Sequences/s: test set, batch 64, every model in one run, interleaved over 3 rounds, median; speed-up = "
        "student / teacher.",
        "",
        "| student | params | dev acc | test acc | retention | seq/s | speed-up | distill wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['parameters'] / 1e6:.1f}M | {r['dev']:.4f} | {r['test']:.4f} | "
                     f"{r['retention']:.1f}% | {r['seq_per_s']:.0f} | {r['speedup']:.2f}× | {r['wall_s']:.0f} s |")
    lines += ["", "<!-- /distill_table -->"]
    block = "\n".join(lines)
    text = path.read_text()
    start, end = text.find("<!-- distill_table -->"), text.find("<!-- /distill_table -->")
    if start >= 0 and end >= 0:
        text = text[:start] + block + text[end + len("<!-- /distill_table -->"):]
    else:
        head, sep, rest = text.partition("\n## ")
        text = head + "\n" + block + "\n\n" + sep.lstrip("\n") + rest if sep else text + "\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="runs/teacher", help="a fine-tuned teacher (made if missing)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--bilstm-epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--only", default=None, help="comma-separated run names")
    ap.add_argument("--out", default="runs/distill_table")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    teacher_dir = Path(args.teacher)
    if not (teacher_dir / "config.json").is_file():
        finetune(FinetuneConfig(model=ModelSection(path="minilm-l6"), output_dir=str(teacher_dir),
                                train=TrainConfig(lr=1e-4, epochs=2, max_length=args.max_length, progress=False)))
    results_path = HERE / "results" / "distill_table.json"
    done = json.loads(results_path.read_text()) if results_path.is_file() else {}
    done = {k: v for k, v in done.items() if not k.startswith("_")}  # the last table is rebuilt
    plan = runs(args.epochs, args.bilstm_epochs, args.max_length, f"{args.out}/cache")
    names = args.only.split(",") if args.only else list(plan)
    for name in names:
        label, cfg = plan[name]
        cfg.teacher = ModelSection(path=str(teacher_dir))
        cfg.output_dir = f"{args.out}/{name}"
        print(f"== {name}: {label}", flush=True)
        from minidistill.cli import distill_run

        r = distill_run(cfg)
        done[name] = {"label": label, "dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"],
                      "parameters": r["parameters"], "wall_s": r["train_seconds"], "dir": r["output_dir"]}
        print(f"   dev {done[name]['dev']:.4f} test {done[name]['test']:.4f} in {r['train_seconds']:.0f} s", flush=True)
        results_path.parent.mkdir(exist_ok=True)
        results_path.write_text(json.dumps(done, indent=1))
    # speed of every student against the teacher, in one run
    _, dev, test = load_splits(DataSection(task="rotten_tomatoes"))
    tok = Tokenizer.from_pretrained(teacher_dir)
    teacher = load_classifier(teacher_dir)
    from minidistill.train import evaluate

    t_scores = {s: evaluate(teacher, tok, d, 64, args.max_length)["accuracy"] for s, d in (("dev", dev), ("test", test))}
    models = {"teacher": teacher, **{n: load_classifier(r["dir"]) for n, r in done.items() if Path(r["dir"]).is_dir()}}
    speed = throughput(models, tok, test, args.max_length)
    rows = [{"label": "teacher: MiniLM-L6 (6 layers, 384)", "parameters": teacher.num_parameters(),
             "dev": t_scores["dev"], "test": t_scores["test"], "retention": 100.0, "seq_per_s": speed["teacher"],
             "speedup": 1.0, "wall_s": float("nan")}]
    for n, r in done.items():
        if n in speed:
            rows.append({**r, "retention": 100 * r["test"] / t_scores["test"], "seq_per_s": speed[n],
                         "speedup": speed[n] / speed["teacher"]})
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()} ({os.cpu_count()} cores), {md.backends.current_backend().name} backend",
            "teacher": str(teacher_dir), "max_length": args.max_length, "epochs": args.epochs,
            "bilstm_epochs": args.bilstm_epochs}
    results_path.write_text(json.dumps({**done, "_table": rows, "_meta": meta}, indent=1, default=str))
    for r in rows:
        print(f"{r['label']:45s} dev {r['dev']:.4f} test {r['test']:.4f} ret {r['retention']:5.1f}% "
              f"{r['seq_per_s']:7.0f} seq/s ×{r['speedup']:.2f}")
    if not args.no_write:
        write_results_md(rows, meta)


if __name__ == "__main__":
    main()
