"""PHM layer speed: the Numba kernel and the NumPy composition (W never built) against the
materialised product (build W = Σ A_i ⊗ s_i t_iᵀ, then one BLAS GEMM), across widths.

For each square width d (n = 4, 4096 rows = batch 32 × 128 tokens, float32) and each of
forward and forward + backward, the three are timed interleaved round by round (the machine is
shared and noisy: only ratios within a round mean anything); medians, and the ratio of each to
the materialised product (> 1: faster than it). Appends a block to RESULTS.md with --write.

    python benchmarks/bench_phm.py [--rounds 7] [--widths 64,256,768,2048] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import minidistill as md  # first: sets the thread-pool environment before NumPy loads
import numpy as np

from minidistill.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import machine, today, write_block  # noqa: E402

ROWS, N = 4096, 4


def _one(kind: str, backward: bool, x, rule, s, t) -> float:
    backend = "numpy" if kind == "numpy" else "numba"
    with md.use_backend(backend):
        args = [md.tensor(a, requires_grad=backward) for a in (x, rule, s, t)]
        t0 = time.perf_counter()
        if kind == "materialised":
            y = F.linear(args[0], F.kron_weight(*args[1:]))
        else:
            y = F.phm_linear(*args)
        if backward:
            y.sum().backward()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--widths", default="64,256,768,2048")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    kinds = ("numba", "numpy", "materialised")
    lines = [f"## PHM layer: kernel vs composition vs materialised W · {today()} · {machine().split(',')[0]}", "",
             f"n = {N}, {ROWS} rows (batch 32 × 128 tokens), float32, square d → d; median ms of {args.rounds} "
             "interleaved rounds; × = materialised time / this time (> 1: faster than building W).", "",
             "| d | pass | Numba kernel | NumPy composition | materialised W + GEMM | kernel × | composition × |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for d in (int(w) for w in args.widths.split(",")):
        x = rng.standard_normal((ROWS, d)).astype(np.float32)
        rule = rng.standard_normal((N, N, N)).astype(np.float32)
        s, t = (rng.standard_normal((N, d // N)).astype(np.float32) for _ in range(2))
        for backward in (False, True):
            times = {k: [] for k in kinds}
            for k in kinds:  # warm-up (Numba compiles once, cached on disk)
                _one(k, backward, x, rule, s, t)
            for _ in range(args.rounds):
                for k in kinds:
                    times[k].append(_one(k, backward, x, rule, s, t))
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            label = "fwd + bwd" if backward else "forward"
            print(f"d={d:5d} {label:9s} " + "  ".join(f"{k} {med[k]:8.2f} ms" for k in kinds), flush=True)
            lines.append(f"| {d} | {label} | {med['numba']:.2f} | {med['numpy']:.2f} | {med['materialised']:.2f} | "
                         f"{med['materialised'] / med['numba']:.2f} | {med['materialised'] / med['numpy']:.2f} |")
    if args.write:
        write_block("bench_phm", lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
