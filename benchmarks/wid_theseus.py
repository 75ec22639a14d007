"""WID and BERT-of-Theseus against same-size KD students (rotten_tomatoes, MiniLM-L6 teacher).

Rows, all trained for the same number of epochs with the same loss (soft KD, T = 2, from the
fine-tuned teacher) so that only the method differs:

* WID to half width (6 layers, hidden 192, FFN 768, 6 heads), folded into a plain BERT, and
  a KD student of that size (fresh layers, PCA-narrowed embeddings: ``make_student``);
* WID to the parameter count of the 2-layer KD student (6 layers, hidden 288, FFN 1152,
  9 heads: 15.1M against 15.6M), and the 2-layer KD student (lower-layer init);
* Theseus to 3 and 2 layers with the constant (p = 0.5 for half the run, then 1) and the
  linear curriculum (p = 0.3 → 1 at two thirds of the run) schedules, and KD students of
  3 and 2 layers (lower-layer init).

Writes ``benchmarks/results/wid_theseus.json`` and the ``wid_theseus`` block of RESULTS.md.

    python benchmarks/wid_theseus.py --teacher runs/teacher [--epochs 2] [--only wid-192,kd-6l-192]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from minidistill.cli import DataSection, DistillConfig, ObjectivesSection, StudentSection
from minidistill.compress.theseus import TheseusSettings
from minidistill.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import HERE, machine, parse_args, measure, run_rows, table_lines, today, write_block  # noqa: E402

HALF = dict(hidden_size=192, num_attention_heads=6, intermediate_size=768)
SIZE_2L = dict(hidden_size=288, num_attention_heads=9, intermediate_size=1152)


def runs(epochs: int, max_length: int, lr: float = 2e-4) -> dict:
    """name → (label, DistillConfig) for every row."""
    def cfg(replace="constant", **student):
        return DistillConfig(student=StudentSection(**student), theseus=TheseusSettings(replace=replace),
                             objectives=ObjectivesSection(soft_kd=1.0, temperature=2.0),
                             train=TrainConfig(lr=lr, epochs=epochs, max_length=max_length, batch_size=32,
                                               progress=False),
                             data=DataSection(task="rotten_tomatoes"))
    return {
        "kd-6l-192": ("KD 6L×192 (fresh layers, PCA embeddings)", cfg(kind="transformer", num_layers=6, **HALF)),
        "wid-192": ("WID → 6L×192 (6 heads, FFN 768), folded", cfg(kind="wid", **HALF)),
        "kd-2l": ("KD 2L×384, init lower (0,1)", cfg(kind="transformer", num_layers=2, init="0,1")),
        "wid-288": ("WID → 6L×288 (9 heads, FFN 1152), folded", cfg(kind="wid", **SIZE_2L)),
        "theseus-2-constant": ("Theseus → 2L, constant p = 0.5", cfg(kind="theseus", num_layers=2, replace="constant")),
        "theseus-2-linear": ("Theseus → 2L, linear curriculum", cfg(kind="theseus", num_layers=2, replace="linear")),
        "kd-3l": ("KD 3L×384, init lower (0,1,2)", cfg(kind="transformer", num_layers=3, init="0,1,2")),
        "theseus-3-constant": ("Theseus → 3L, constant p = 0.5", cfg(kind="theseus", num_layers=3, replace="constant")),
        "theseus-3-linear": ("Theseus → 3L, linear curriculum", cfg(kind="theseus", num_layers=3, replace="linear")),
    }


def main() -> None:
    args = parse_args(__doc__, 2, "runs/wid_theseus")
    teacher_dir = Path(args.teacher)
    if not (teacher_dir / "config.json").is_file():
        raise SystemExit(f"{teacher_dir}: no fine-tuned teacher; make one with benchmarks/distill_table.py or "
                         "`minidistill finetune`")
    plan = runs(args.epochs, args.max_length)
    names = [n for n in args.only.split(",") if n] if args.only is not None else list(plan)  # --only "": measure only
    results_path = HERE / "results" / "wid_theseus.json"
    done = run_rows(plan, names, teacher_dir, args.out, results_path)
    rows = measure(done, teacher_dir, args.max_length, order=list(plan))
    meta = {"date": today(), "machine": machine(), "teacher": str(teacher_dir), "epochs": args.epochs,
            "max_length": args.max_length}
    results_path.write_text(json.dumps({**done, "_table": rows, "_meta": meta}, indent=1, default=str))
    if not args.no_write:
        write(rows, meta)


def write(rows: list, meta: dict) -> None:
    """The ``wid_theseus`` block of RESULTS.md."""
    write_block("wid_theseus", [
        f"## WID and BERT-of-Theseus against same-size KD students · {meta['date']} · {meta['machine']}",
        "",
        f"Teacher `{meta['teacher']}` (as in the distillation table); rotten_tomatoes, max length "
        f"{meta['max_length']}; every student {meta['epochs']} epochs, AdamW lr 2e-4, batch 32, soft KD (T = 2) as "
        "the only loss. WID: compactor lr 1e-4 per unit width (a d × d compactor: 1e-4 / d), 16 pruning rounds, "
        "masks hard at 80% of the run, then folded. Theseus: successor layers copied from the predecessor's first "
        "layers; constant p = 0.5 for half the run then p = 1; linear p = 0.3 → 1 at two thirds of the run. "
        "Sequences/s: test set, batch 64, all models interleaved in one run, 3 rounds, median. Wall: training time.",
        "",
        *table_lines(rows)])

if __name__ == "__main__":
    main()
