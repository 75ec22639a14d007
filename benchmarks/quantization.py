"""Int8 and ONNX: accuracy, size and speed of a fine-tuned teacher and a 2-layer KD student in
float, post-training int8 (ours: dynamic and static) and under ONNX Runtime (float, int8 exact,
int8 fused), plus quantization-aware training of the student with KD; one interleaved speed run
with the float teacher under transformers + torch as the peer. Writes block ``quantization`` of
RESULTS.md.

    minidistill demo --quick --output-dir runs/demo-quick      # a teacher and students
    python benchmarks/quantization.py --teacher runs/demo-quick/teacher --student runs/demo-quick/kd-2l
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import minidistill as md
from minidistill.cli import DataSection, DistillConfig, ModelSection, distill_run, load_classifier, load_splits
from minidistill.compress.quantize import quantize
from minidistill.core.tensor import no_grad
from minidistill.data import Tokenizer
from minidistill.data.datasets import model_inputs
from minidistill.export import run, session, to_onnx

from _tables import cpu_name, today, write_block


def cpu_description() -> str:
    """The processor's model name, core count and widest vector instructions."""
    name = cpu_name("unknown CPU")
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI" if "avx_vnni" in flags else \
        "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {os.cpu_count()} cores, {isa}"


def folder_mb(path: Path, names=("model.safetensors", "model.onnx")) -> float:
    return sum((path / n).stat().st_size for n in names if (path / n).is_file()) / 1e6


def logits_fn(kind, obj):
    """A function batch → logits (NumPy) for our model, an ONNX Runtime session or transformers."""
    if kind == "ours":
        def f(batch):
            with no_grad():
                return obj(**batch).logits.numpy()
    elif kind == "ort":
        def f(batch):
            return run(obj, batch)["logits"]
    else:
        import torch

        def f(batch):
            with torch.no_grad():
                return obj(**{k: torch.as_tensor(v) for k, v in batch.items()}).logits.numpy()
    return f


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="runs/demo-quick/teacher")
    ap.add_argument("--student", default="runs/demo-quick/kd-2l")
    ap.add_argument("--max-length", type=int, default=None, help="default: the length the teacher was trained with")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--speed-examples", type=int, default=256)
    ap.add_argument("--qat-steps", type=int, default=100)
    ap.add_argument("--out", default="runs/quantization")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    teacher_dir, student_dir = Path(args.teacher), Path(args.student)
    recorded = json.loads((teacher_dir / "metrics.json").read_text())["config"]
    length = args.max_length or recorded["train"]["max_length"]
    data_cfg = DataSection(task="rotten_tomatoes")
    train, dev, test = load_splits(data_cfg)
    tok = Tokenizer.from_pretrained(teacher_dir)
    tmp = Path(tempfile.mkdtemp())

    # --- quantization-aware training, distilled from the float teacher: the student (dynamic
    # activations) and the teacher itself (static activations, against post-training static)
    def qat_run(name, model_dir, activations):
        out = Path(args.out) / name
        if not (out / "config.json").is_file():
            s_cfg = json.loads((student_dir / "metrics.json").read_text())["config"]
            cfg = DistillConfig()
            cfg.teacher = ModelSection(path=str(teacher_dir))
            cfg.data = DataSection(**s_cfg["data"])
            cfg.student.kind = "qat"
            cfg.qat.model, cfg.qat.activations = str(model_dir), activations
            cfg.objectives.soft_kd, cfg.objectives.task = 1.0, 1.0
            cfg.train.max_steps, cfg.train.lr = args.qat_steps, 2e-5
            cfg.train.max_length, cfg.train.batch_size = s_cfg["train"]["max_length"], s_cfg["train"]["batch_size"]
            cfg.output_dir = str(out)
            t0 = time.perf_counter()
            distill_run(cfg)
            print(f"QAT {name}: {args.qat_steps} steps in {time.perf_counter() - t0:.0f} s")
        return out

    qat_dir = qat_run("qat", student_dir, "per_token")
    qat_teacher_dir = qat_run("qat-teacher-static", teacher_dir, "static")

    variants = {}  # name → (model label, variant label, kind, object, disk MB, float reference name)
    for label, folder in (("teacher (MiniLM-L6, 6 × 384)", teacher_dir), ("2-layer KD student", student_dir)):
        fp = load_classifier(folder)
        dyn = quantize(fp)
        static = quantize(fp, "static", calibration=train, tokenizer=tok, max_length=length)
        for name, m in (("dyn", dyn), ("static", static)):
            m.save_pretrained(tmp / f"{label}-{name}")
        ort32 = to_onnx(fp, tmp / f"{label}-f32.onnx")
        ort8 = to_onnx(dyn, tmp / f"{label}-i8.onnx")
        fused = to_onnx(dyn, tmp / f"{label}-fused.onnx", int8_style="fused")
        base = f"{label}|fp32"
        variants[base] = (label, "float32", "ours", fp, folder_mb(folder), base)
        variants[f"{label}|int8"] = (label, "int8 dynamic, per token", "ours", dyn, folder_mb(tmp / f"{label}-dyn"), base)
        variants[f"{label}|static"] = (label, "int8 static (512 texts)", "ours", static,
                                       folder_mb(tmp / f"{label}-static"), base)
        variants[f"{label}|ort32"] = (label, "ONNX Runtime float32", "ort", session(ort32), ort32.stat().st_size / 1e6, base)
        variants[f"{label}|ort8"] = (label, "ONNX Runtime int8 exact", "ort", session(ort8), ort8.stat().st_size / 1e6, base)
        variants[f"{label}|fused"] = (label, "ONNX Runtime int8 fused", "ort", session(fused), fused.stat().st_size / 1e6, base)
        if folder == teacher_dir:
            import transformers

            hf = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
            variants[f"{label}|hf"] = (label, "transformers + torch float32", "hf", hf, folder_mb(folder), base)
    t_label, s_label = "teacher (MiniLM-L6, 6 × 384)", "2-layer KD student"
    variants[f"{t_label}|qat"] = (t_label, f"int8 static, QAT with KD ({args.qat_steps} steps)", "ours",
                                  load_classifier(qat_teacher_dir), folder_mb(qat_teacher_dir), f"{t_label}|fp32")
    qat = load_classifier(qat_dir)
    variants[f"{s_label}|qat"] = (s_label, f"int8 QAT with KD ({args.qat_steps} steps)", "ours", qat, folder_mb(qat_dir), f"{s_label}|fp32")

    # --- accuracy on the whole test set, and agreement with the same model in float
    test_batches = [model_inputs(b) for b in test.batches(tok, 64, length, shuffle=False, bucket=False)]
    preds, acc = {}, {}
    for key, (_, _, kind, obj, _, _) in variants.items():
        f = logits_fn(kind, obj)
        logits = np.concatenate([f(b) for b in test_batches])
        preds[key] = logits.argmax(-1)
        acc[key] = float(np.mean(preds[key] == test.labels))
        print(f"{key:45s} test {acc[key]:.4f}", flush=True)

    # --- speed: every variant in turn within each round (interleaved), medians and spread
    timing = test.select(range(args.speed_examples))
    batches = [model_inputs(b) for b in timing.batches(tok, 64, length, shuffle=False)]
    fns = {k: logits_fn(v[2], v[3]) for k, v in variants.items()}
    for f in fns.values():
        f(batches[0])  # warm-up
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for b in batches:
                f(b)
            times[k].append(time.perf_counter() - t0)
    speed = {k: len(timing) / statistics.median(v) for k, v in times.items()}
    spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()}

    # --- the Numba backend's two exact int8 GEMMs on the student's int8 model
    ops = md.get_backend("numba")
    keep = ops.int8_gemm
    g_times = {"kernel": [], "blas": []}
    for _ in range(args.rounds):
        for choice in g_times:
            ops.int8_gemm = choice
            t0 = time.perf_counter()
            for b in batches:
                fns[f"{s_label}|int8"](b)
            g_times[choice].append(time.perf_counter() - t0)
    ops.int8_gemm = keep
    gemm = {c: len(timing) / statistics.median(v) for c, v in g_times.items()}

    t_hf = speed[f"{t_label}|hf"]
    lines = ["## Int8 quantization and ONNX Runtime (`benchmarks/quantization.py`)", "",
             f"Int8 and ONNX Runtime, measured {today()} on {cpu_description()}; rotten_tomatoes test set "
             f"({len(test)} sentences) at length {length}; the teacher and the 2-layer KD student of "
             f"`minidistill demo --quick`; speed: {len(timing)} sentences in batches of 64, {args.rounds} "
             "interleaved rounds, medians (spread = (slowest − fastest) / median).", "",
             "| model | variant | test acc | Δ vs float | agrees with float | disk MB | seq/s | × same model float (ours) "
             "| × teacher in transformers | spread |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, (label, variant, _, _, mb, base) in variants.items():
        lines.append(f"| {label} | {variant} | {acc[key]:.4f} | {100 * (acc[key] - acc[base]):+.1f} | "
                     f"{100 * np.mean(preds[key] == preds[base]):.1f}% | {mb:.1f} | {speed[key]:.0f} | "
                     f"{speed[key] / speed[base]:.2f}× | {speed[key] / t_hf:.2f}× | {100 * spread[key]:.0f}% |")
    f, ptq, q = acc[f"{t_label}|fp32"], acc[f"{t_label}|static"], acc[f"{t_label}|qat"]
    lines += ["", f"QAT with KD against post-training static int8 on the teacher: float {f:.4f}, post-training "
              f"{ptq:.4f} ({100 * (ptq - f):+.1f} points), QAT {q:.4f} ({100 * (q - f):+.1f}); recovered "
              + (f"{(q - ptq) / (f - ptq):.0%} of the loss." if f > ptq else "nothing to recover (no loss).")
              + f" The QAT runs also trained {args.qat_steps} more steps against the teacher with the labels (the "
              "teacher itself had 120), so part of their gain over float is that training, not quantization."]
    lines += ["", f"The Numba backend's exact int8 GEMMs on the student's int8 model: int8 kernel "
              f"{gemm['kernel']:.0f} seq/s, float32-BLAS path {gemm['blas']:.0f} seq/s (default on this machine: "
              f"`{keep}`)."]
    print("\n".join(lines))
    if not args.no_write:
        write_block("quantization", lines)


if __name__ == "__main__":
    main()
