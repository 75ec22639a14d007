"""The module-2 benchmark a student runs: ``python -m minidistill.course.bench``.

It times the teaching matmul kernel against NumPy's BLAS and the fused LayerNorm kernel
against the NumPy reference, interleaved, and prints medians and ratios. (The project's own
figures come from ``benchmarks/``; this is the small version for the course.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..backends import get_backend
from ..backends import numba_ops


def _median_pair(fa, fb, repeats: int) -> tuple[float, float]:
    fa(), fb()  # compile and warm up
    ta, tb = [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        t0 = time.perf_counter(); fa(); ta.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter(); fb(); tb.append(time.perf_counter() - t0)  # noqa: E702
    return float(np.median(ta)), float(np.median(tb))


def bench_matmul(sizes=(64, 128, 256), repeats: int = 5) -> list[dict]:
    """Teaching ``matmul_kernel`` vs ``numpy.matmul`` (BLAS) on square float64 matrices."""
    rows = []
    for n in sizes:
        a, b = np.random.default_rng(0).standard_normal((n, n)), np.random.default_rng(1).standard_normal((n, n))
        ours, blas = _median_pair(lambda: numba_ops.matmul(a, b), lambda: a @ b, repeats)
        rows.append({"op": "matmul", "n": n, "kernel_ms": round(ours * 1e3, 3), "reference_ms": round(blas * 1e3, 3),
                     "kernel_over_reference": round(ours / blas, 2), "gflops_kernel": round(2 * n**3 / ours / 1e9, 2)})
    return rows


def bench_layer_norm(shapes=((512, 384), (2048, 384)), repeats: int = 5) -> list[dict]:
    """Fused LayerNorm forward (Numba) vs the NumPy reference backend, float32."""
    fused, ref = get_backend("numba"), get_backend("numpy")
    rows = []
    for shape in shapes:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        w, b = np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32)
        ours, base = _median_pair(lambda: fused.layer_norm_forward(x, w, b, 1e-12),
                                  lambda: ref.layer_norm_forward(x, w, b, 1e-12), repeats)
        rows.append({"op": "layer_norm", "n": f"{shape[0]}x{shape[1]}", "kernel_ms": round(ours * 1e3, 3),
                     "reference_ms": round(base * 1e3, 3), "kernel_over_reference": round(ours / base, 2)})
    return rows


def main(argv=None) -> int:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    for row in bench_matmul(repeats=args.repeats) + bench_layer_norm(repeats=args.repeats):
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
