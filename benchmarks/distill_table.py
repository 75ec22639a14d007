"""The distillation experiment ("How to Distill your BERT" table at our scale, plus XtremeDistil).

On rotten_tomatoes with a fine-tuned MiniLM-L6 teacher (6 layers, hidden 384), distil:

* 2-layer students (hidden 384), initialised from the teacher's lower layers (0, 1) or upper
  layers (4, 5), each with soft KD on the logits (T = 2) alone ("vanilla KD") or together
  with the task's cross-entropy, hidden-state MSE, attention KL or MiniLM value relations
  (uniform layer maps);
* XtremeDistil's BiLSTM student with the staged recipe on unlabelled transfer data (the
  training texts and augmented copies).

For each: dev/test accuracy, retention (% of the teacher's test accuracy), parameters, and
test-set sequences/s measured against the teacher in one run (all models interleaved, 3
rounds, median), wall time of the distillation. Writes ``benchmarks/results/distill_table.json``
and the table between the ``distill_table`` markers in ``benchmarks/RESULTS.md``.

    python benchmarks/distill_table.py --teacher runs/teacher [--epochs 2] [--only kd-lower,bilstm,kd-lower@3]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from minidistill.cli import (DataSection, DistillConfig, FinetuneConfig, ModelSection, ObjectivesSection,
                             StudentSection, TransferSection, finetune)
from minidistill.compress.xtremedistil import BiLSTMSettings
from minidistill.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import HERE, machine, parse_args, measure, run_rows, table_lines, today, write_block  # noqa: E402

OBJECTIVES = {
    "kd": ("vanilla KD", {}),
    "kdce": ("KD + task CE", {"task": 1.0}),
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
    # the best row's variants: temperature 1, and XtremeDistil's augmented transfer set for a transformer
    kd = out["kd-lower"][1]
    out["kd-lower-t1"] = ("2L vanilla KD (T = 1), init lower (0,1)",
                          replace(kd, objectives=ObjectivesSection(soft_kd=1.0, temperature=1.0)))
    out["kd-lower-lr1e4"] = ("2L vanilla KD, init lower (0,1), lr 1e-4",
                             replace(kd, train=replace(kd.train, lr=1e-4)))
    out["kd-lower-task"] = ("2L soft KD + cross-entropy on the labels (weight 1), init lower (0,1)",
                            replace(kd, objectives=ObjectivesSection(soft_kd=1.0, temperature=2.0, task=1.0)))
    out["kd-lower-aug"] = ("2L vanilla KD, init lower (0,1), transfer = train + 1 augmented copy",
                           replace(kd, transfer=TransferSection(augment_copies=1, p_mask=0.1, p_replace=0.1)))
    stage = TrainConfig(lr=2e-3, epochs=bilstm_epochs, max_length=max_length, batch_size=32, warmup_ratio=0.05,
                        progress=False)
    out["bilstm"] = ("BiLSTM XtremeDistil staged", DistillConfig(
        student=StudentSection(kind="bilstm"), bilstm=BiLSTMSettings(hidden_size=128, embedding_size=64),
        recipe="xtremedistil", transfer=TransferSection(augment_copies=1, p_mask=0.1, p_replace=0.1),
        train=stage, data=DataSection(task="rotten_tomatoes"), cache_dir=cache_dir))
    return out


def plan_for(names: list, epochs: int, bilstm_epochs: int, max_length: int, cache_dir: str) -> dict:
    """The runs asked for; ``name@E`` is row ``name`` trained for E epochs (its own row)."""
    plan = {}
    for name in names:
        base, _, ep = name.partition("@")
        rows = runs(int(ep) if ep else epochs, bilstm_epochs, max_length, cache_dir)
        if base not in rows:
            raise SystemExit(f"unknown run {name!r}; choose from {', '.join(rows)} (optionally @epochs)")
        label, cfg = rows[base]
        plan[name] = (f"{label}, {ep} epochs" if ep else label, cfg)
    return plan


def main() -> None:
    args = parse_args(__doc__, 1, "runs/distill_table",
                      lambda ap: ap.add_argument("--bilstm-epochs", type=int, default=1))
    teacher_dir = Path(args.teacher)
    if not (teacher_dir / "config.json").is_file():
        finetune(FinetuneConfig(model=ModelSection(path="minilm-l6"), output_dir=str(teacher_dir),
                                train=TrainConfig(lr=1e-4, epochs=2, max_length=args.max_length, progress=False)))
    results_path = HERE / "results" / "distill_table.json"
    # --only "": re-measure and rewrite the table from the finished rows without running any
    names = [n for n in args.only.split(",") if n] if args.only is not None else list(runs(1, 1, args.max_length))
    plan = plan_for(names, args.epochs, args.bilstm_epochs, args.max_length, f"{args.out}/cache")
    done = run_rows(plan, names, teacher_dir, args.out, results_path)
    order = sorted(done, key=lambda n: (n.startswith("bilstm"), n))
    rows = measure(done, teacher_dir, args.max_length, order)
    meta = {"date": today(), "machine": machine(), "teacher": str(teacher_dir), "max_length": args.max_length,
            "epochs": args.epochs, "bilstm_epochs": args.bilstm_epochs}
    results_path.write_text(json.dumps({**done, "_table": rows, "_meta": meta}, indent=1, default=str))
    if not args.no_write:
        write_block("distill_table", header(meta) + table_lines(rows))


def header(meta: dict) -> list[str]:
    """The table's title and setting."""
    return [
        f"## Distillation table: rotten_tomatoes, MiniLM-L6 teacher · {meta['date']} · {meta['machine']}",
        "",
        f"Teacher: fine-tuned MiniLM-L6 (`{meta['teacher']}`), max length {meta['max_length']}. Transformer "
        f"students: {meta['epochs']} epoch(s) on the labelled training set unless the row says otherwise, AdamW lr "
        "2e-4, soft KD (T = 2) in every row, intermediate losses added with weight 1 on uniform layer maps (hidden "
        "states 0,3,6 → 0,1,2; attention layers 2,5 → 0,1). BiLSTM: 128 units per direction, 64-d PCA embeddings "
        "from the teacher's, transfer set = training texts + 1 augmented copy (10% masked, 10% replaced words), "
        f"lr 2e-3, {meta['bilstm_epochs']} epoch(s) per stage/phase. Sequences/s: test set, batch 64, every model in "
        "one run, interleaved over 3 rounds, median; speed-up = student / teacher. Wall: distillation time.",
        "",
    ]


if __name__ == "__main__":
    main()
