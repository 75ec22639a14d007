"""Scaling up on the CPU: speed in both import orders, mixed precision, and data parallelism.

Parts (each keeps its figures in ``benchmarks/results/scaling.json``; ``--part all`` runs all):

* ``speed``: ``bench_bert.py`` in fresh processes, MiniLM-L6 at 32 × 128 (numba and torch
  backends against transformers + torch, fp32), once with minidistill imported first and once
  with NumPy and torch imported first; then the torch backend at BERT-base size (random
  12 × 768, batch 8 × 128) in fp32 and in bf16 (ours under ``autocast``, transformers under
  ``torch.autocast``). Ratios are against the peer in the same interleaved run.
* ``precision``: the 2-layer KD student of the distillation table (lower-layer init, soft KD
  T = 2, lr 2e-4, one epoch, max length 64) on the torch backend, trained in fp32 and in bf16
  from the same teacher cache; dev and test accuracy, wall time.
* ``ddp``: fine-tuning throughput with ``torchrun --nproc_per_node 2`` (gloo) against one process
  on the same machine and global batch (sequences per second from the step log).

    python benchmarks/scaling.py --part all --teacher runs/teacher

Writes the ``scaling`` block of RESULTS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "scaling.json"


def _bench(args: list, numpy_first: bool) -> dict:
    """One ``bench_bert.py`` run in a fresh process; its JSON report."""
    out = Path(f"/tmp/minidistill-scaling-{os.getpid()}-{time.time_ns()}.json")
    argv = ["bench_bert.py", "--skip-kernels", "--json", str(out), *args]
    if numpy_first:
        code = (f"import numpy, torch, runpy, sys; sys.argv = {argv!r}; "
                f"runpy.run_path({str(HERE / 'bench_bert.py')!r}, run_name='__main__')")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, str(HERE / "bench_bert.py"), *argv[1:]]
    subprocess.run(cmd, check=True, cwd=ROOT)
    report = json.loads(out.read_text())
    out.unlink()
    return report


def part_speed(rounds: int) -> dict:
    res = {}
    for order in ("minidistill first", "numpy and torch first"):
        res[f"MiniLM-L6 32×128 fp32, {order}"] = _bench(["--backends", "numba,torch", "--rounds", str(rounds)],
                                                        numpy_first=order != "minidistill first")
    import minidistill as md

    native = md.backends.get_backend("torch").native_low_precision("bfloat16")
    for dtype in ("float32", "bfloat16"):
        # emulated bf16 (no bf16 instructions) is ~10× slower: fewer rounds keep the run short
        n = rounds if dtype == "float32" or native else min(rounds, 2)
        res[f"BERT-base 8×128 {dtype}"] = _bench(["--backends", "torch", "--model", "bert-base-random", "--batch", "8",
                                                  "--dtype", dtype, "--rounds", str(n)], numpy_first=False)
    return res


def part_precision(teacher: str, out: str) -> dict:
    from minidistill.cli import (DataSection, DistillConfig, FinetuneConfig, ModelSection, ObjectivesSection,
                                 StudentSection, distill_run, finetune)
    from minidistill.train import TrainConfig

    if not (Path(teacher) / "config.json").is_file():
        finetune(FinetuneConfig(model=ModelSection(path="minilm-l6"), output_dir=teacher,
                                train=TrainConfig(lr=5e-5, epochs=1, max_length=64, progress=False),
                                data=DataSection(task="rotten_tomatoes")))
    res = {}
    for precision in ("fp32", "bf16"):
        cfg = DistillConfig(
            teacher=ModelSection(path=teacher, backend="torch"),
            student=StudentSection(kind="transformer", num_layers=2, init="0,1"),
            objectives=ObjectivesSection(soft_kd=1.0, temperature=2.0),
            train=TrainConfig(lr=2e-4, epochs=1, max_length=64, batch_size=32, progress=False, precision=precision),
            data=DataSection(task="rotten_tomatoes"), cache_dir=f"{out}/cache", output_dir=f"{out}/kd-{precision}",
            overwrite=True)
        r = distill_run(cfg)
        res[precision] = {"dev": r["dev"]["accuracy"], "test": r["test"]["accuracy"], "wall_s": r["train_seconds"],
                          "steps": r["steps"]}
        print(precision, res[precision], flush=True)
    return res


def part_ddp(teacher: str, out: str, steps: int) -> dict:
    """Fine-tuning seq/s (median over the steps after the first 3) with 1 and 2 processes."""
    res = {}
    for nproc in (1, 2):
        folder = Path(out) / f"ddp-{nproc}"
        log = folder / "log.jsonl"
        if log.exists():
            log.unlink()
        args = ["finetune", f"--model.path={teacher}", "--model.backend=torch", "--data.task=rotten_tomatoes",
                f"--train.max_steps={steps}", "--train.batch_size=32", "--train.max_length=64", "--train.progress=false",
                f"--train.log_file={log}", "--train.eval_every=100000", "--data.max_eval_examples=64",
                f"--output_dir={folder}", "--overwrite=true", "--train.checkpoint_every=0"]
        env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc)}
        cmd = ([sys.executable, "-m", "minidistill"] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
                "minidistill"])
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(cmd + args, check=True, cwd=ROOT, env=env)
        rates = [json.loads(line)["seq_per_s"] for line in log.read_text().splitlines() if '"seq_per_s"' in line][3:]
        rates.sort()
        res[nproc] = rates[len(rates) // 2]
        print(f"{nproc} process(es): {res[nproc]:.1f} seq/s", flush=True)
    res["ratio"] = res[2] / res[1]
    return res


def cpu_model() -> str:
    """The processor's name and its bf16 / AVX-512 support, from /proc/cpuinfo."""
    from _tables import cpu_name

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = cpu_name("?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return f"{name} ({', '.join(have) if have else 'AVX2, no AVX-512, no bf16 instructions'})"


def block(data: dict) -> list[str]:
    """The RESULTS.md lines of the figures in ``data``."""
    lines = [f"## Scaling up on the CPU · {data.get('date', '?')} · {data.get('machine', '?')}", "",
             "`python benchmarks/scaling.py --part all`: ratios against transformers + torch measured in the same "
             "run, interleaved, medians (> 1: faster than transformers).", ""]
    speed = data.get("speed")
    if speed:
        lines += ["| model, batch, precision | import order | ours | forward | training step |", "|---|---|---|---:|---:|"]
        for key, rep in speed.items():
            what, _, order = key.partition(", ")
            for backend in ("numba", "torch"):
                if backend in rep.get("forward", {}):
                    lines.append(f"| {what} | {order or 'minidistill first'} | {backend} backend | "
                                 f"{rep['forward'][backend]['ratio']:.2f}× | {rep['training step'][backend]['ratio']:.2f}× |")
        lines.append("")
    prec = data.get("precision")
    if prec:
        lines += ["2-layer KD student (lower init, soft KD T = 2, 1 epoch, max length 64), torch backend:", "",
                  "| precision | dev acc | test acc | wall |", "|---|---:|---:|---:|"]
        for p, r in prec.items():
            lines.append(f"| {p} | {r['dev']:.4f} | {r['test']:.4f} | {r['wall_s']:.0f} s |")
        lines.append("")
    ddp = data.get("ddp")
    if ddp:
        lines += [f"Data parallel (fine-tuning MiniLM-L6, torch backend, global batch 32 × 64, gloo): 1 process "
                  f"{ddp['1']:.1f} seq/s, 2 processes {ddp['2']:.1f} seq/s ({ddp['ratio']:.2f}×).", ""]
    if speed and "BERT-base 8×128 float32" in speed and "BERT-base 8×128 bfloat16" in speed:
        f32, b16 = speed["BERT-base 8×128 float32"], speed["BERT-base 8×128 bfloat16"]
        ours = f32["training step"]["torch"]["seconds"] / b16["training step"]["torch"]["seconds"]
        peer = f32["training step"]["transformers"]["seconds"] / b16["training step"]["transformers"]["seconds"]
        lines += [f"bf16 against fp32 on this machine (BERT-base training step, medians of the two runs above): ours "
                  f"{ours:.2f}×, transformers under `torch.autocast` {peer:.2f}× (< 1: bf16 is slower).", ""]
    for note in ("speed_note", "ddp_note", "gpu_note"):
        if data.get(note):
            lines += [data[note], ""]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="all", choices=["all", "speed", "precision", "ddp", "write"])
    ap.add_argument("--teacher", default="runs/teacher")
    ap.add_argument("--out", default="runs/scaling")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ddp-steps", type=int, default=30)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _tables import machine, today, write_block

    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data.update(date=today(), machine=machine(cpu=cpu_model()).rsplit(',', 1)[0])
    parts = ["speed", "precision", "ddp"] if args.part == "all" else [args.part]
    for part in parts:
        if part == "speed":
            data["speed"] = part_speed(args.rounds)
        elif part == "precision":
            data["precision"] = part_precision(args.teacher, args.out)
        elif part == "ddp":
            data["ddp"] = json.loads(json.dumps(part_ddp(args.teacher, args.out, args.ddp_steps)))
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=1))
    lines = block(data)
    print("\n".join(lines))
    if not args.no_write:
        write_block("scaling", lines)


if __name__ == "__main__":
    main()
