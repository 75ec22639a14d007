"""The Numba backend: the NumPy reference with its hot paths replaced by fused kernels.

Every kernel here does in one pass over memory what the NumPy composition does in several
(each NumPy call reads and writes whole arrays). Dense matrix products stay on NumPy's
BLAS, which reaches most of the machine's peak; :func:`matmul_kernel` is the readable
teaching version, measured against BLAS in ``benchmarks/bench_bert.py``.

Habits (as minitorch's ``fast_ops``): ``njit(parallel=True, cache=True)``, ``prange`` over
rows, no allocation or calls in inner loops, ``error_model="numpy"`` so loops vectorise (``fast_exp`` / ``fast_erf`` are inlined
polynomials), float64 accumulation. Debug any kernel as plain Python with
``NUMBA_DISABLE_JIT=1``; the test suite runs once that way too.
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
from numba import njit, prange

from ._fastmath import fast_erf, fast_erf32, fast_exp, fast_exp32
from .numpy_ops import NumpyOps

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# Every kernel compiles once per dtype and is cached on disk. ``error_model="numpy"`` drops
# the zero-division check Python semantics put on every ``/``: that check is a branch out
# of the loop, and it alone stops LLVM from vectorising (measured: 4-10x slower).
# ``contract`` lets LLVM fuse a*b+c into one FMA instruction, which only adds accuracy.
kernel = njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
# Kernels with row sums also allow reassociation, so a sum can be split across SIMD lanes
# (a different but equally accurate summation order; inf and NaN keep their meaning).
reduce_kernel = njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


# ------------------------------------------------------------------- GELU
# Elementwise kernels run row-parallel over a (rows, cols) view: a flat loop split into
# chunks with computed bounds did not vectorise inside ``prange`` (measured 6x slower).
@kernel
def gelu_forward_kernel(x, out):
    """out = 0.5 x (1 + erf(x/√2)) over (rows, cols), float64 arithmetic.

    Optimizations:
        * one pass, vectorised polynomial erf (no libm call);
        * parallel over rows.
    """
    rows, cols = x.shape
    for r in prange(rows):
        for j in range(cols):
            v = np.float64(x[r, j])
            out[r, j] = 0.5 * v * (1.0 + fast_erf(v * _INV_SQRT2))


@kernel
def gelu_backward_kernel(x, g, out):
    """out = g (Φ(x) + x φ(x)) over (rows, cols), float64 arithmetic; Φ and φ in one pass."""
    rows, cols = x.shape
    for r in prange(rows):
        for j in range(cols):
            v = np.float64(x[r, j])
            cdf = 0.5 * (1.0 + fast_erf(v * _INV_SQRT2))
            pdf = _INV_SQRT_2PI * fast_exp(-0.5 * v * v)
            out[r, j] = g[r, j] * (cdf + v * pdf)


@kernel
def gelu32_forward_kernel(x, out):
    """float32 GELU: as :func:`gelu_forward_kernel` with float32 arithmetic throughout
    (16 lanes per AVX-512 register instead of 8; error at float32 rounding)."""
    rows, cols = x.shape
    half, one, k = np.float32(0.5), np.float32(1.0), np.float32(_INV_SQRT2)
    for r in prange(rows):
        for j in range(cols):
            v = x[r, j]
            out[r, j] = half * v * (one + fast_erf32(v * k))


@kernel
def gelu32_backward_kernel(x, g, out):
    """float32 GELU backward: ``g (Φ(x) + x φ(x))`` in float32 arithmetic."""
    rows, cols = x.shape
    half, one, k = np.float32(0.5), np.float32(1.0), np.float32(_INV_SQRT2)
    c0 = np.float32(_INV_SQRT_2PI)
    for r in prange(rows):
        for j in range(cols):
            v = x[r, j]
            cdf = half * (one + fast_erf32(v * k))
            pdf = c0 * fast_exp32(-half * v * v)
            out[r, j] = g[r, j] * (cdf + v * pdf)


# ---------------------------------------------------------------- softmax
@reduce_kernel
def softmax_forward_kernel(x, mask, rows_per_mask, use_mask, scale, out, log):
    """Row softmax (or log-softmax) of scale · x (R, N) with keep-mask row ``r // rows_per_mask``.

    Masked entries give 0 (softmax) or -inf (log-softmax); a fully masked row gives zeros.

    Optimizations:
        * four short passes over one row while it sits in cache (max, exp, sum, scale)
          instead of NumPy's six whole-array passes (where, max, subtract, exp, sum, divide);
        * the exp pass has no running sum in it, so it vectorises; the sum is a separate
          reassociable reduction;
        * parallel over rows; the key-padding mask is read per row, never broadcast.
    """
    rows, n = x.shape
    for r in prange(rows):
        mrow = r // rows_per_mask
        m = -np.inf
        for j in range(n):
            if (not use_mask) or mask[mrow, j]:
                m = max(m, scale * x[r, j])
        if m == -np.inf:  # every entry masked
            for j in range(n):
                out[r, j] = -np.inf if log else 0.0
            continue
        if use_mask:
            for j in range(n):
                out[r, j] = fast_exp(scale * x[r, j] - m) if mask[mrow, j] else 0.0
        else:
            for j in range(n):
                out[r, j] = fast_exp(scale * x[r, j] - m)
        s = 0.0
        for j in range(n):
            s += out[r, j]
        if log:
            lse = m + math.log(s)
            for j in range(n):
                keep = (not use_mask) or mask[mrow, j]
                out[r, j] = scale * x[r, j] - lse if keep else -np.inf
        else:
            inv = 1.0 / s
            for j in range(n):
                out[r, j] = out[r, j] * inv


@reduce_kernel
def softmax_backward_kernel(y, g, scale, out):
    """dx = scale · y (g - Σ g y) per row of (R, N).

    Optimizations: two passes per row in cache, parallel over rows.
    """
    # BEGIN TASK 2.3
    rows, n = y.shape
    for r in prange(rows):
        dot = 0.0
        for j in range(n):
            dot += np.float64(g[r, j]) * y[r, j]
        for j in range(n):
            out[r, j] = scale * y[r, j] * (g[r, j] - dot)
    # END TASK 2.3


@reduce_kernel
def log_softmax_backward_kernel(y, g, out):
    """dx = g - exp(y) Σ g per row; entries with y = -inf (masked) get 0."""
    rows, n = y.shape
    for r in prange(rows):
        s = 0.0
        for j in range(n):
            if y[r, j] != -np.inf:
                s += g[r, j]
        for j in range(n):
            if y[r, j] == -np.inf:
                out[r, j] = 0.0
            else:
                out[r, j] = g[r, j] - math.exp(y[r, j]) * s


# -------------------------------------------------------------- LayerNorm
@reduce_kernel
def layer_norm_forward_kernel(x, w, b, eps, out, mean, rstd):
    """y = (x - μ) / √(σ² + eps) · w + b per row of x (N, D); saves μ and 1/√(σ² + eps).

    Optimizations:
        * mean and variance in one pass (shifted by the first element, float64 sums) and
          the normalisation in a second, instead of NumPy's seven passes;
        * parallel over rows.
    """
    # BEGIN TASK 2.2
    rows, d = x.shape
    for r in prange(rows):
        shift = np.float64(x[r, 0])
        s = 0.0
        s2 = 0.0
        for j in range(d):
            v = np.float64(x[r, j]) - shift
            s += v
            s2 += v * v
        mu_s = s / d
        var = s2 / d - mu_s * mu_s
        if var < 0.0:
            var = 0.0
        inv = 1.0 / math.sqrt(var + eps)
        mu = mu_s + shift
        mean[r] = mu
        rstd[r] = inv
        for j in range(d):
            out[r, j] = (np.float64(x[r, j]) - mu) * inv * w[j] + b[j]
    # END TASK 2.2


@reduce_kernel
def layer_norm_backward_kernel(g, x, w, mean, rstd, dx, dw_part, db_part):
    """LayerNorm gradients per row; weight/bias gradients as per-task partial sums.

    dx = rstd (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) with ĝ = g w, x̂ = (x - μ) rstd.

    Optimizations:
        * two passes per row; rows split into ``dw_part.shape[0]`` contiguous tasks, each
          accumulating its own partial weight/bias gradient (no write conflicts), summed
          afterwards.
    """
    rows, d = x.shape
    tasks = dw_part.shape[0]
    per = (rows + tasks - 1) // tasks
    for t in prange(tasks):
        for r in range(t * per, min(rows, (t + 1) * per)):
            mu = mean[r]
            inv = rstd[r]
            a = 0.0
            bsum = 0.0
            for j in range(d):
                xh = (np.float64(x[r, j]) - mu) * inv
                gj = np.float64(g[r, j])
                gx = gj * w[j]
                a += gx
                bsum += gx * xh
                dw_part[t, j] += gj * xh
                db_part[t, j] += gj
            a /= d
            bsum /= d
            for j in range(d):
                xh = (np.float64(x[r, j]) - mu) * inv
                dx[r, j] = inv * (np.float64(g[r, j]) * w[j] - a - xh * bsum)


# -------------------------------------------------------------- embedding
@kernel
def embedding_backward_kernel(ids, g, table):
    """table[ids[i]] += g[i] for flat ids (N,) and g (N, D).

    Optimizations: the columns are split across tasks, so repeated ids never race and no
    atomic adds are needed; each task streams through all rows of its column block.
    """
    n, d = g.shape
    block = 64
    for c in prange((d + block - 1) // block):
        lo = c * block
        hi = min(d, lo + block)
        for i in range(n):
            row = ids[i]
            for j in range(lo, hi):
                table[row, j] += g[i, j]


# --------------------------------------------------------------- epilogue
@kernel
def bias_residual_kernel(y, bias, residual, use_bias, use_residual):
    """y += bias (broadcast over rows) and += residual, in place, one pass. y: (N, D).

    Optimizations: the flags are tested once per row, not per element, so each inner loop
    is a plain vectorised add; parallel over rows.
    """
    # BEGIN TASK 2.4
    rows, d = y.shape
    for r in prange(rows):
        if use_bias and use_residual:
            for j in range(d):
                y[r, j] += bias[j] + residual[r, j]
        elif use_bias:
            for j in range(d):
                y[r, j] += bias[j]
        else:
            for j in range(d):
                y[r, j] += residual[r, j]
    # END TASK 2.4


# ---------------------------------------------------------------- optimiser
@kernel
def adamw_kernel(p, g, m, v, lr, beta1, beta2, eps, decay, c1, c2):
    """One AdamW step over flat arrays, in place, in a single pass.

    Optimizations: every parameter element is read and written once, instead of the dozen
    whole-array passes (and temporaries) of the NumPy composition; parallel over chunks.
    """
    n = p.size
    inv_sqrt_c2 = 1.0 / math.sqrt(c2)
    step = lr / c1
    shrink = 1.0 - lr * decay
    for i in prange(n):
        gi = g[i]
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * shrink - step * mi / (math.sqrt(vi) * inv_sqrt_c2 + eps)


# ----------------------------------------------------------- teaching matmul
@kernel
def matmul_kernel(a, b, out):
    """out = a @ b for a (M, K), b (K, N): the readable version of what BLAS does.

    Optimizations:
        * i-k-j loop order: the innermost loop walks rows of ``b`` and ``out``
          contiguously, so it vectorises;
        * parallel over rows of ``a``.
    Not done (and why BLAS wins): cache blocking, register tiling, packing.
    """
    # BEGIN TASK 2.1
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            out[i, j] = 0.0
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]
    # END TASK 2.1


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays with :func:`matmul_kernel` (for teaching and benchmarks)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit")
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    matmul_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


# ------------------------------------------------------------------- int8
@njit(parallel=True, cache=True)
def int8_gemm_kernel(a, b, out):
    """out = a @ bᵀ for int8 a (M, K) and b (N, K), with int32 accumulation.

    Both operands are read along K, contiguously, so the inner loop is a dot product that
    LLVM vectorises (sign-extend to 16/32 bits, multiply-add in SIMD lanes; an integer sum
    may be reordered freely, so no fastmath flag is needed). Parallel over rows of ``a``.
    Machines with AVX-512 VNNI or AVX-VNNI have a single instruction for 4 int8 products
    into an int32 lane; LLVM only emits it when compiling for such a machine.
    """
    m, k = a.shape
    n = b.shape[0]
    for i in prange(m):
        for j in range(n):
            acc = np.int32(0)
            for p in range(k):
                acc += np.int32(a[i, p]) * np.int32(b[j, p])
            out[i, j] = acc


@kernel
def quantize_int8_rows_kernel(x, scale, out):
    """out[i, :] = clip(round(x[i, :] / scale[i]), ±127) for x (M, K), scale (M,); a division,
    not a product with 1/scale, so the result is the reference's to the last bit."""
    m, k = x.shape
    for i in prange(m):
        s = scale[i]
        for j in range(k):
            v = np.rint(x[i, j] / s)
            out[i, j] = np.int8(min(max(v, -127.0), 127.0))


def _torch():
    """torch, imported on first use (the Numba backend does not need it otherwise)."""
    import torch

    return torch


def default_int8_gemm() -> str:
    """``"kernel"`` on a CPU with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI),
    where the int8 kernel can beat float32 BLAS; ``"blas"`` elsewhere (measured on a 2-core
    AVX2 EPYC: the kernel ran MiniLM-L6's linear maps at 0.46× the float32 model's speed,
    the exact BLAS path at 0.69×; benchmarks/quantization.py)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return "blas"
    return "kernel" if ("avx512_vnni" in flags or "avx_vnni" in flags) else "blas"


#: K-chunk for which the float32 product of int8 operands is exact: K · 127² < 2²⁴ for K ≤ 1040.
EXACT_FP32_CHUNK = 1024


def int8_matmul_blas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ bᵀ`` for int8 operands through float32 BLAS, exactly: each chunk of at most
    :data:`EXACT_FP32_CHUNK` columns sums integers below 2²⁴, which float32 holds exactly;
    the chunks are added in int32. On a machine without int8 dot-product instructions this
    can beat an int8 kernel (see ``benchmarks/quantization.py``)."""
    af, bf = a.astype(np.float32), b.astype(np.float32)
    k = a.shape[1]
    out = None
    for lo in range(0, max(k, 1), EXACT_FP32_CHUNK):
        part = (af[:, lo:lo + EXACT_FP32_CHUNK] @ bf[:, lo:lo + EXACT_FP32_CHUNK].T).astype(np.int32)  # (M, N)
        out = part if out is None else out + part
    return out


# ---------------------------------------------------------------- backend
def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous (rows, last) matrix."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


_NO_MASK = np.ones((1, 1), dtype=np.bool_)


# ------------------------------------------------------------------- LSTM
# The recurrence is sequential in time. Each step is one BLAS product h W_hhᵀ for the whole
# batch, made by NumPy (Numba's own np.dot goes through a BLAS measured 16x slower here), and
# one fused, row-parallel pass over the gates below; the input projection x W_ihᵀ of all
# steps is a single GEMM made before (in ``functions.lstm``).
@kernel
def lstm_step_forward_kernel(a, xg, t, mask, h, c, out, gates, c_new, h_prev, c_prev):
    """Step t of one LSTM direction. a (B, 4H) = h W_hhᵀ; xg (B, T, 4H) input gates (i, f, g, o);
    mask (B, T) uint8, 1 = real token (a padded step keeps the state and outputs 0).
    Updates the state h, c (B, H) in place and saves what backward needs.

    Optimizations:
        * the four gate nonlinearities, the cell update and the saves in one pass;
        * parallel over rows.
    """
    b, hid = h.shape
    for r in prange(b):
        keep = mask[r, t] != 0
        for j in range(hid):
            i = 1.0 / (1.0 + math.exp(-(a[r, j] + xg[r, t, j])))
            f = 1.0 / (1.0 + math.exp(-(a[r, hid + j] + xg[r, t, hid + j])))
            g = math.tanh(a[r, 2 * hid + j] + xg[r, t, 2 * hid + j])
            o = 1.0 / (1.0 + math.exp(-(a[r, 3 * hid + j] + xg[r, t, 3 * hid + j])))
            cn = f * c[r, j] + i * g
            hn = o * math.tanh(cn)
            gates[r, t, j], gates[r, t, hid + j], gates[r, t, 2 * hid + j], gates[r, t, 3 * hid + j] = i, f, g, o
            h_prev[r, t, j], c_prev[r, t, j], c_new[r, t, j] = h[r, j], c[r, j], cn
            if keep:
                h[r, j], c[r, j], out[r, t, j] = hn, cn, hn
            else:
                out[r, t, j] = 0.0


@kernel
def lstm_step_backward_kernel(g_out, t, gates, c_new, c_prev, mask, dh, dc, da, dxg):
    """Step t of backpropagation through time: from the carried dh, dc (B, H) and the output
    gradient, the gate pre-activation gradients da (B, 4H) (also written to dxg[:, t]); dc is
    updated in place; dh is finished by the caller (dh ← da W_hh, plus dh on padded rows)."""
    b, hid = dh.shape
    for r in prange(b):
        keep = mask[r, t] != 0
        for j in range(hid):
            if keep:
                i, f = gates[r, t, j], gates[r, t, hid + j]
                g, o = gates[r, t, 2 * hid + j], gates[r, t, 3 * hid + j]
                tc = math.tanh(c_new[r, t, j])
                dhn = g_out[r, t, j] + dh[r, j]
                dcn = dc[r, j] + dhn * o * (1.0 - tc * tc)
                da[r, j] = dcn * g * i * (1.0 - i)
                da[r, hid + j] = dcn * c_prev[r, t, j] * f * (1.0 - f)
                da[r, 2 * hid + j] = dcn * i * (1.0 - g * g)
                da[r, 3 * hid + j] = dhn * tc * o * (1.0 - o)
                dc[r, j] = dcn * f
            else:
                da[r, j] = da[r, hid + j] = da[r, 2 * hid + j] = da[r, 3 * hid + j] = 0.0
            for k in range(4):
                dxg[r, t, k * hid + j] = da[r, k * hid + j]


@kernel
def lstm_carry_kernel(dprev, mask, t, dh):
    """dh ← dprev on real rows, dh + dprev on padded rows (their gradient passes through)."""
    b, hid = dh.shape
    for r in prange(b):
        carry = mask[r, t] == 0
        for j in range(hid):
            dh[r, j] = dprev[r, j] + (dh[r, j] if carry else 0.0)


# ------------------------------------------------------------ PHM (Kronecker) layer
@kernel
def phm_forward_kernel(x, rule, s, t, y, u, c):
    """y = x Wᵀ for W = Σ_i A_i ⊗ s_i t_iᵀ, one row per thread, W never built.

    x (N, n·p), rule (m, n, n) [i, b, a], s (m, q), t (m, p) → y (N, n·q), m terms (m = n for
    rank-one fast weights); also keeps u (N, n, m) [r, a, i] = t_i · x_a and c (N, n, m)
    [r, b, i] = Σ_a A_i[b, a] u[r, a, i].

    Optimizations:
        * per row O(n (in + out) + n³) work, no (out, in) matrix in memory;
        * parallel over rows, float64 accumulation.
    """
    rows = x.shape[0]
    m, p = t.shape
    n = rule.shape[1]
    q = s.shape[1]
    for r in prange(rows):
        for a in range(n):
            for i in range(m):
                acc = 0.0
                for k in range(p):
                    acc += np.float64(x[r, a * p + k]) * t[i, k]
                u[r, a, i] = acc
        for b in range(n):
            for i in range(m):
                acc = 0.0
                for a in range(n):
                    acc += np.float64(rule[i, b, a]) * u[r, a, i]
                c[r, b, i] = acc
            for l in range(q):
                acc = 0.0
                for i in range(m):
                    acc += c[r, b, i] * s[i, l]
                y[r, b * q + l] = acc


@kernel
def phm_backward_kernel(g, rule, s, t, dx, dc, du):
    """Row-wise part of the PHM backward: dc[r, b, i] = s_i · g_b, du[r, a, i] =
    Σ_b A_i[b, a] dc[r, b, i] and dx_a = Σ_i du[r, a, i] t_i; the weight gradients are sums
    over rows of outer products of these, left to BLAS."""
    rows = g.shape[0]
    m, p = t.shape
    n = rule.shape[1]
    q = s.shape[1]
    for r in prange(rows):
        for b in range(n):
            for i in range(m):
                acc = 0.0
                for l in range(q):
                    acc += np.float64(g[r, b * q + l]) * s[i, l]
                dc[r, b, i] = acc
        for a in range(n):
            for i in range(m):
                acc = 0.0
                for b in range(n):
                    acc += np.float64(rule[i, b, a]) * dc[r, b, i]
                du[r, a, i] = acc
            for k in range(p):
                acc = 0.0
                for i in range(m):
                    acc += du[r, a, i] * t[i, k]
                dx[r, a * p + k] = acc


class NumbaOps(NumpyOps):
    """NumPy reference with fused Numba kernels for GELU, softmax, LayerNorm, embedding
    gradients and the linear epilogue."""

    name = "numba"

    #: where batched products (attention) run: ``"torch"`` (torch's batched GEMM on the same
    #: memory, no copy; when torch is installed) or ``"numpy"``; ``MINIDISTILL_BATCHED_MATMUL``
    #: overrides. Measured on a 2-core AVX2 EPYC, MiniLM's (32, 12, 128, 32) products: NumPy
    #: 20.9 / 16.8 ms, torch on the permuted views 11.7 / 9.4 ms (benchmarks/RESULTS.md, scaling).
    batched_matmul = os.environ.get("MINIDISTILL_BATCHED_MATMUL") or (
        "torch" if importlib.util.find_spec("torch") is not None else "numpy")

    def matmul(self, a, b):
        # 2-D products go to NumPy's BLAS as they are (OpenBLAS beat torch's MKL there on the
        # machines measured). Batched ones (attention, on permuted views): NumPy hands each
        # small matrix of the stack to BLAS with awkward strides, so it gets one contiguous copy
        # first (4% off the whole forward); torch's batched GEMM reads the views directly.
        if a.ndim > 2 or b.ndim > 2:
            if self.batched_matmul == "torch" and a.dtype == b.dtype and a.dtype.kind == "f":
                torch = _torch()
                try:
                    return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
                except ValueError:  # negative strides: torch cannot view them
                    pass
            return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))
        return np.matmul(a, b)

    def bias_add(self, y, bias=None, residual=None):
        if bias is None and residual is None:
            return y
        if not (y.flags.c_contiguous and y.flags.writeable) or y.ndim != 2:
            return super().bias_add(y, bias, residual)
        b = np.ascontiguousarray(bias, dtype=y.dtype) if bias is not None else y[0]
        r = np.ascontiguousarray(residual, dtype=y.dtype) if residual is not None else y
        bias_residual_kernel(y, b, r, bias is not None, residual is not None)
        return y

    #: which exact int8 GEMM to use: "kernel" (:func:`int8_gemm_kernel`) or "blas"
    #: (:func:`int8_matmul_blas`); ``MINIDISTILL_INT8_GEMM`` overrides the machine's default
    int8_gemm = os.environ.get("MINIDISTILL_INT8_GEMM") or default_int8_gemm()

    def int8_matmul(self, a, b):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(f"int8_matmul: shapes {a.shape} and {b.shape} do not fit (a (M, K), b (N, K))")
        if self.int8_gemm == "blas":
            return int8_matmul_blas(a, b)
        out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
        int8_gemm_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
        return out

    def quantize_int8(self, x, scale):
        scale = np.asarray(scale)
        if x.ndim == 2 and scale.shape in ((x.shape[0], 1), (1, 1), (1,), ()):
            x = np.ascontiguousarray(x)
            rows = np.broadcast_to(scale.reshape(-1), (x.shape[0],)).astype(x.dtype)
            out = np.empty(x.shape, dtype=np.int8)
            quantize_int8_rows_kernel(x, np.ascontiguousarray(rows), out)
            return out
        return super().quantize_int8(x, scale)

    def adamw_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        arrays = (param, grad, m, v)
        if not all(a.flags.c_contiguous for a in arrays) or not param.flags.writeable:
            return super().adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)
        flat = [a.reshape(-1) for a in arrays]
        adamw_kernel(*flat, lr, beta1, beta2, eps, weight_decay, 1.0 - beta1**step, 1.0 - beta2**step)

    def lstm_forward(self, xg, w_hh, mask=None, reverse=False):
        xg = np.ascontiguousarray(xg)
        b, t_len, four_h = xg.shape
        hid = four_h // 4
        w_t = np.ascontiguousarray(w_hh.T, dtype=xg.dtype)  # (H, 4H)
        m = _lstm_mask(mask, b, t_len)
        out = np.empty((b, t_len, hid), xg.dtype)
        gates = np.empty_like(xg)
        c_new, h_prev, c_prev = (np.empty((b, t_len, hid), xg.dtype) for _ in range(3))
        h, c = np.zeros((b, hid), xg.dtype), np.zeros((b, hid), xg.dtype)
        a = np.empty((b, four_h), xg.dtype)
        for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
            np.matmul(h, w_t, out=a)  # (B, 4H)
            lstm_step_forward_kernel(a, xg, t, m, h, c, out, gates, c_new, h_prev, c_prev)
        return out, (gates, c_new, h_prev, c_prev)

    def lstm_backward(self, g_out, w_hh, saved, mask=None, reverse=False):
        gates, c_new, h_prev, c_prev = saved
        g_out = np.ascontiguousarray(g_out, dtype=gates.dtype)
        b, t_len, hid = g_out.shape
        dxg = np.empty_like(gates)
        w = np.ascontiguousarray(w_hh, dtype=gates.dtype)  # (4H, H)
        m = _lstm_mask(mask, b, t_len)
        dh, dc = np.zeros((b, hid), gates.dtype), np.zeros((b, hid), gates.dtype)
        da, dprev = np.empty((b, 4 * hid), gates.dtype), np.empty((b, hid), gates.dtype)
        for t in (range(t_len) if reverse else range(t_len - 1, -1, -1)):
            lstm_step_backward_kernel(g_out, t, gates, c_new, c_prev, m, dh, dc, da, dxg)
            np.matmul(da, w, out=dprev)  # (B, H)
            lstm_carry_kernel(dprev, m, t, dh)
        dw = dxg.reshape(b * t_len, 4 * hid).T @ h_prev.reshape(b * t_len, hid)  # (4H, H)
        return dxg, dw

    def phm_forward(self, x2, rule, out_factor, in_factor):
        x2 = np.ascontiguousarray(x2)
        dt = x2.dtype
        rows, m, n, q = x2.shape[0], rule.shape[0], rule.shape[1], out_factor.shape[1]
        y = np.empty((rows, n * q), dt)
        u, c = np.empty((rows, n, m), dt), np.empty((rows, n, m), dt)
        phm_forward_kernel(x2, np.ascontiguousarray(rule), np.ascontiguousarray(out_factor),
                           np.ascontiguousarray(in_factor), y, u, c)
        return y, (u, c)

    def phm_backward(self, g2, x2, rule, out_factor, in_factor, saved):
        u, c = saved  # (N, a, i), (N, b, i)
        g2 = np.ascontiguousarray(g2, dtype=u.dtype)
        rows, m, n, p, q = x2.shape[0], rule.shape[0], rule.shape[1], in_factor.shape[1], out_factor.shape[1]
        dx = np.empty((rows, n * p), u.dtype)
        dc, du = np.empty((rows, n, m), u.dtype), np.empty((rows, n, m), u.dtype)
        phm_backward_kernel(g2, np.ascontiguousarray(rule), np.ascontiguousarray(out_factor),
                            np.ascontiguousarray(in_factor), dx, dc, du)
        # weight gradients: sums over rows, one BLAS product each
        d_out = c.reshape(rows * n, m).T @ g2.reshape(rows * n, q)  # (i, q)
        d_rule = np.matmul(dc.transpose(2, 1, 0), u.transpose(2, 0, 1))  # (i, b, N) @ (i, N, a)
        d_in = du.reshape(rows * n, m).T @ np.ascontiguousarray(x2).reshape(rows * n, p)  # (i, p)
        return dx, d_rule, d_out, d_in

    def gelu_forward(self, x):
        x2 = _rows(x)
        out = np.empty_like(x2)
        (gelu32_forward_kernel if x2.dtype == np.float32 else gelu_forward_kernel)(x2, out)
        return out.reshape(np.shape(x))

    def gelu_backward(self, x, g):
        x2 = _rows(x)
        g2 = _rows(np.asarray(g, dtype=x2.dtype))
        out = np.empty_like(x2)
        (gelu32_backward_kernel if x2.dtype == np.float32 else gelu_backward_kernel)(x2, g2, out)
        return out.reshape(np.shape(x))

    def _softmax(self, x, mask, log, scale=1.0):
        x = np.ascontiguousarray(x)
        shape = x.shape
        x2 = _rows(x)
        rows, n = x2.shape
        if mask is None:
            m2, per, use = _NO_MASK, rows or 1, False
        else:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.ndim < len(shape):
                mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
            key_padding = (
                mask.ndim == len(shape) and mask.shape[-1] == n and mask.shape[0] in (1, shape[0])
                and all(s == 1 for s in mask.shape[1:-1])
            )
            if key_padding:  # (B, 1, …, 1, N): one mask row per batch element
                m2 = np.ascontiguousarray(mask.reshape(mask.shape[0], n))
                per = max(rows // m2.shape[0], 1)
            else:
                m2 = np.ascontiguousarray(np.broadcast_to(mask, shape)).reshape(rows, n)
                per = 1
            use = True
        out = np.empty_like(x2)
        softmax_forward_kernel(x2, m2, per, use, float(scale), out, log)
        return out.reshape(shape)

    def softmax_forward(self, x, mask=None, scale=1.0):
        return self._softmax(x, mask, False, scale)

    def log_softmax_forward(self, x, mask=None):
        return self._softmax(x, mask, True)

    def softmax_backward(self, y, g, scale=1.0):
        y2, g2 = _rows(y), _rows(np.asarray(g, dtype=y.dtype))
        out = np.empty_like(y2)
        softmax_backward_kernel(y2, g2, float(scale), out)
        return out.reshape(y.shape)

    def log_softmax_backward(self, y, g):
        y2, g2 = _rows(y), _rows(np.asarray(g, dtype=y.dtype))
        out = np.empty_like(y2)
        log_softmax_backward_kernel(y2, g2, out)
        return out.reshape(y.shape)

    def layer_norm_forward(self, x, weight, bias, eps):
        x2 = _rows(x)
        rows = x2.shape[0]
        out = np.empty_like(x2)
        mean = np.empty(rows, dtype=np.float64)
        rstd = np.empty(rows, dtype=np.float64)
        layer_norm_forward_kernel(x2, np.ascontiguousarray(weight), np.ascontiguousarray(bias), eps, out, mean, rstd)
        return out.reshape(x.shape), mean, rstd

    def layer_norm_backward(self, g, x, weight, mean, rstd):
        x2 = _rows(x)
        g2 = _rows(np.asarray(g, dtype=x2.dtype))
        rows, d = x2.shape
        tasks = max(1, min(rows, 64))
        dx = np.empty_like(x2)
        dw_part = np.zeros((tasks, d), dtype=np.float64)
        db_part = np.zeros((tasks, d), dtype=np.float64)
        layer_norm_backward_kernel(g2, x2, np.ascontiguousarray(weight), mean, rstd, dx, dw_part, db_part)
        dt = x2.dtype
        return dx.reshape(x.shape), dw_part.sum(0).astype(dt), db_part.sum(0).astype(dt)

    def embedding_backward(self, ids, g, num_embeddings):
        d = g.shape[-1]
        table = np.zeros((num_embeddings, d), dtype=g.dtype)
        flat_ids = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
        embedding_backward_kernel(flat_ids, _rows(g), table)
        return table


def _lstm_mask(mask, b: int, t_len: int) -> np.ndarray:
    """(B, T) uint8 keep-mask for the LSTM kernels (all ones when ``mask`` is None)."""
    if mask is None:
        return np.ones((b, t_len), np.uint8)
    return np.ascontiguousarray(mask, dtype=np.uint8)
