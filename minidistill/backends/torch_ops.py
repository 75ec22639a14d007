"""The Torch backend: the same operations on ``torch.Tensor`` s, on the CPU or a GPU.

Design choice: minidistill's own tape drives torch arrays (torch autograd stays off, every
call runs under ``torch.no_grad``-free plain tensors that never require grad). The
hand-written backward of each op is then the same code on every backend, which keeps the
parity tests meaningful, and each coarse op maps to one or a few torch kernels, so the
Python overhead per op is small next to the matmuls on full-scale inputs.

torch is an optional dependency: constructing this backend without it raises an
ImportError that says how to install it.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Ops

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "the torch backend needs PyTorch: pip install 'minidistill[torch]' "
            "(on a CPU-only machine: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from None
    return torch


class TorchOps(Ops):
    """Backend over ``torch.Tensor`` on ``device`` (``cpu``, ``cuda``, ``cuda:1``)."""

    name = "torch"
    low_precision = ("bfloat16", "float16")
    fused_attention = True

    def __init__(self, device: str = "cpu", seed: int = 0):
        torch = _import_torch()
        self.torch = torch
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self._device = dev
        self.device = str(dev)
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(seed)
        self._dtypes = {
            "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
            "float64": torch.float64, "int32": torch.int32, "int64": torch.int64,
            "bool": torch.bool, "uint8": torch.uint8, "int8": torch.int8,
        }

    def __repr__(self):
        return f"<backend torch:{self.device}>"

    def native_low_precision(self, dtype: str) -> bool:
        """Whether this device has hardware for ``dtype`` (``"bfloat16"`` / ``"float16"``)
        matrix products. A CPU without AVX-512 BF16 / AMX (or AVX-512 FP16) emulates them: on
        a 2-core AVX2 EPYC a bf16 training step of a 2-layer BERT took 10× the float32 one."""
        torch = self.torch
        if self._device.type == "cuda":
            return dtype == "float16" or torch.cuda.is_bf16_supported()
        try:
            check = {"bfloat16": torch.ops.mkldnn._is_mkldnn_bf16_supported,
                     "float16": torch.ops.mkldnn._is_mkldnn_fp16_supported}[dtype]
            return bool(check())
        except (AttributeError, RuntimeError, KeyError):
            return False

    def _tdtype(self, dtype):
        if isinstance(dtype, self.torch.dtype):
            return dtype
        name = np.dtype(dtype).name if dtype != "bfloat16" else "bfloat16"
        return self._dtypes[name]

    # ------------------------------------------------------------------ arrays
    def is_array(self, x) -> bool:
        return isinstance(x, self.torch.Tensor)

    def asarray(self, x, dtype=None):
        torch = self.torch
        tdtype = None if dtype is None else self._tdtype(dtype)
        if isinstance(x, torch.Tensor):
            return x.to(device=self._device, dtype=tdtype or x.dtype)
        arr = np.asarray(x)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            arr = arr.copy()
        t = torch.from_numpy(arr) if arr.dtype.kind in "fiub" else torch.as_tensor(arr)
        return t.to(device=self._device, dtype=tdtype or t.dtype)

    def to_numpy(self, a):
        a = a.detach()
        if a.dtype == self.torch.bfloat16:
            a = a.float()
        return a.cpu().numpy()

    def dtype(self, a):
        if a.dtype == self.torch.bfloat16:
            return np.dtype("float32")  # NumPy has no bfloat16; report the compute type
        return np.dtype(str(a.dtype).replace("torch.", ""))

    def cast(self, a, dtype):
        return a.to(self._tdtype(dtype))

    def zeros(self, shape, dtype):
        return self.torch.zeros(tuple(shape), dtype=self._tdtype(dtype), device=self._device)

    def zeros_like(self, a):
        return self.torch.zeros_like(a)

    def ones_like(self, a):
        return self.torch.ones_like(a)

    def arange(self, n, dtype="int64"):
        return self.torch.arange(n, dtype=self._tdtype(dtype), device=self._device)

    def copy(self, a):
        return a.clone().contiguous()

    # -------------------------------------------------------------- randomness
    def seed(self, seed: int) -> None:
        self._gen.manual_seed(seed)

    def get_rng_state(self):
        return self._gen.get_state().cpu().numpy().tolist()

    def set_rng_state(self, state) -> None:
        self._gen.set_state(self.torch.tensor(state, dtype=self.torch.uint8))

    def rand(self, shape, dtype):
        return self.torch.rand(tuple(shape), generator=self._gen, dtype=self._tdtype(dtype), device=self._device)

    def randn(self, shape, dtype):
        return self.torch.randn(tuple(shape), generator=self._gen, dtype=self._tdtype(dtype), device=self._device)

    # ---------------------------------------------------------- elementwise math
    def exp(self, a):
        return self.torch.exp(a)

    def log(self, a):
        return self.torch.log(a)

    def tanh(self, a):
        return self.torch.tanh(a)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def maximum(self, a, b):
        return self.torch.maximum(a, self._like(b, a))

    def where(self, cond, a, b):
        torch = self.torch
        if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            return torch.where(cond, torch.tensor(a, device=self._device), torch.tensor(b, device=self._device))
        return torch.where(cond, a, b)

    def _like(self, b, a):
        return b if isinstance(b, self.torch.Tensor) else self.torch.tensor(b, dtype=a.dtype, device=a.device)

    # --------------------------------------------------------------- reductions
    def sum(self, a, axis=None, keepdims=False):
        if axis is None:
            s = a.sum()
            return s.reshape((1,) * a.ndim) if keepdims else s
        return a.sum(dim=axis, keepdim=keepdims)

    def max(self, a, axis=None, keepdims=False):
        if axis is None:
            m = a.max()
            return m.reshape((1,) * a.ndim) if keepdims else m
        return self.torch.amax(a, dim=axis, keepdim=keepdims)

    def argmax(self, a, axis=-1):
        return self.torch.argmax(a, dim=axis)

    # ------------------------------------------------------------------- shapes
    def reshape(self, a, shape):
        return a.reshape(tuple(shape))

    def transpose(self, a, axes):
        return a.permute(*axes)

    def concat(self, arrays, axis=0):
        return self.torch.cat(list(arrays), dim=axis)

    def broadcast_to(self, a, shape):
        return a.expand(tuple(shape))

    def getitem_backward(self, g, index, shape):
        out = self.torch.zeros(tuple(shape), dtype=g.dtype, device=g.device)
        index = self._index(index)
        items = index if isinstance(index, tuple) else (index,)
        if all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items):
            out[index] = g
        else:
            out.index_put_(self._advanced(index, shape), g.reshape(-1), accumulate=True)
        return out

    def _index(self, index):
        """NumPy arrays inside an index become torch tensors on this device."""
        if isinstance(index, tuple):
            return tuple(self._index(i) for i in index)
        if isinstance(index, np.ndarray):
            return self.torch.from_numpy(index).to(self._device)
        return index

    def _advanced(self, index, shape):
        """Full advanced-index tuple (every axis an index tensor) for ``index_put_``."""
        torch = self.torch
        grids = torch.meshgrid(*[torch.arange(s, device=self._device) for s in shape], indexing="ij")
        return tuple(grid[index].reshape(-1) for grid in grids)

    # ------------------------------------------------------------- linear algebra
    def matmul(self, a, b):
        return self.torch.matmul(a, b)

    # ------------------------------------------------------------------- int8
    def quantize_int8(self, x, scale):
        scale = scale if self.is_array(scale) else self.asarray(scale, dtype=self.dtype(x))
        return self.torch.clamp(self.torch.round(x / scale), -127, 127).to(self.torch.int8)

    def int8_matmul(self, a, b):
        torch = self.torch
        m, k = a.shape
        if a.is_cuda and m > 16 and k % 8 == 0 and b.shape[0] % 8 == 0:
            return torch._int_mm(a, b.t())  # the GPU's int8 tensor cores
        # On CPU torch's int8 GEMM (_int_mm) is a slow reference; a float32 GEMM over chunks of
        # at most 1024 columns is exact (sums below 2²⁴) and runs at BLAS speed.
        out = None
        for lo in range(0, max(k, 1), 1024):
            part = (a[:, lo:lo + 1024].float() @ b[:, lo:lo + 1024].float().t()).to(torch.int32)  # (M, N)
            out = part if out is None else out + part
        return out

    # ------------------------------------------------------------ fused hot paths
    def linear_forward(self, x2, weight, bias=None, residual=None):
        # addmm adds the bias inside the GEMM (one pass over the output fewer)
        y = self.torch.matmul(x2, weight.t()) if bias is None else self.torch.addmm(bias, x2, weight.t())
        return y.add_(residual) if residual is not None else y

    def adamw_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        # in-place fused methods: five passes, no temporaries but the denominator
        c1, c2 = 1.0 - beta1**step, 1.0 - beta2**step
        m.lerp_(grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if weight_decay:
            param.mul_(1.0 - lr * weight_decay)
        denom = v.sqrt().div_(c2**0.5).add_(eps)
        param.addcdiv_(m, denom, value=-lr / c1)

    def bias_add(self, y, bias=None, residual=None):
        if bias is not None:
            y = y.add_(bias)
        if residual is not None:
            y = y.add_(residual)
        return y

    def gelu_forward(self, x):
        return self.torch.nn.functional.gelu(x)

    def gelu_backward(self, x, g):
        # torch's fused kernel computes g (Φ(x) + x φ(x)) in one pass
        return self.torch.ops.aten.gelu_backward(g, x)

    def softmax_forward(self, x, mask=None, scale=1.0):
        torch = self.torch
        if mask is None:
            return torch.softmax(x * scale if scale != 1.0 else x, dim=-1)
        # An additive bias (0 or -inf) of the mask's own small shape, added together with the
        # scale in one pass: 5x faster than scale, masked_fill and a NaN clean-up on
        # (B, H, T, T) scores (benchmarks/RESULTS.md).
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        y = torch.softmax(torch.add(bias, x, alpha=scale), dim=-1)
        if not bool(mask.any(dim=-1).all()):  # some row is fully masked: 0/0 gave NaN there
            y = torch.nan_to_num(y, nan=0.0)
        return y

    def softmax_backward(self, y, g, scale=1.0):
        # fused y (g - Σ g y), as torch's own softmax backward
        dx = self.torch.ops.aten._softmax_backward_data(g.contiguous(), y, -1, y.dtype)
        return dx.mul_(scale) if scale != 1.0 else dx

    def log_softmax_forward(self, x, mask=None):
        if mask is not None:
            x = x.masked_fill(~mask, float("-inf"))
        y = self.torch.log_softmax(x, dim=-1)
        return y.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))

    def log_softmax_backward(self, y, g):
        keep = self.torch.isfinite(y)
        g = g.masked_fill(~keep, 0.0)
        p = self.torch.exp(y)  # exp(-inf) = 0 on masked entries
        return g - p * g.sum(dim=-1, keepdim=True)

    def layer_norm_forward(self, x, weight, bias, eps):
        # torch's fused kernel returns the statistics its backward needs
        d = x.shape[-1]
        x2 = x.reshape(-1, d).contiguous()
        y, mean, rstd = self.torch.ops.aten.native_layer_norm(x2, [d], weight, bias, eps)
        return y.reshape(x.shape), mean.reshape(-1), rstd.reshape(-1)

    def layer_norm_backward(self, g, x, weight, mean, rstd):
        d = x.shape[-1]
        x2, g2 = x.reshape(-1, d).contiguous(), g.reshape(-1, d).contiguous()
        # The kernel never reads the bias's values (dbias = Σ g); it only needs a defined
        # tensor of the bias's shape and device to produce dbias, which the weight is.
        dx, dweight, dbias = self.torch.ops.aten.native_layer_norm_backward(
            g2, x2, [d], mean.reshape(-1, 1), rstd.reshape(-1, 1), weight, weight, [True, True, True]
        )
        return dx.reshape(x.shape), dweight, dbias

    def attention_forward(self, q, k, v, mask, scale: float, dropout_p: float, grad: bool):
        # torch's scaled_dot_product_attention picks a flash / memory-efficient kernel where the
        # inputs allow (the math kernel otherwise). Its backward is torch's own: the forward
        # runs under torch autograd on detached leaves, and the small graph it leaves holds what
        # the chosen kernel saves (q, k, v, the output and the softmax's log-sum-exp for the
        # fused kernels, never the (T, T) probabilities).
        torch = self.torch
        sdpa = torch.nn.functional.scaled_dot_product_attention
        if mask is not None and mask.dtype != torch.bool:
            mask = mask != 0
        seed = None
        if dropout_p > 0.0:  # drawn from our generator, so a run stays reproducible and resumable
            seed = int(torch.randint(0, 2**62, (1,), generator=self._gen, device=self._device).item())

        def run(*args):
            if seed is None:
                return sdpa(*args, attn_mask=mask, dropout_p=0.0, scale=scale)
            devices = [self._device] if self._device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, device_type=self._device.type):
                torch.manual_seed(seed)
                return sdpa(*args, attn_mask=mask, dropout_p=dropout_p, scale=scale)

        if not grad:
            with torch.no_grad():
                return run(q, k, v), None
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        with torch.enable_grad():
            out = run(*leaves)
        return out.detach(), (out, leaves)

    def attention_backward(self, state, g, needs: tuple):
        out, leaves = state
        wanted = [t for t, n in zip(leaves, needs) if n]
        got = iter(self.torch.autograd.grad(out, wanted, g.to(out.dtype)) if wanted else ())
        return tuple(next(got) if n else None for n in needs)

    def embedding_backward(self, ids, g, num_embeddings):
        d = g.shape[-1]
        table = self.torch.zeros((num_embeddings, d), dtype=g.dtype, device=g.device)
        table.index_add_(0, ids.reshape(-1).to(self._device), g.reshape(-1, d))
        return table
