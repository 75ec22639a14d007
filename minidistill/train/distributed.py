"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

    torchrun --nproc_per_node 2 -m minidistill finetune --data.train=... --out=...

``torchrun`` starts one process per worker and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` (called by the
:class:`~minidistill.train.Trainer`) joins the process group: gloo for CPU arrays (the
NumPy and Numba backends and torch on the CPU), NCCL for CUDA. Nothing here starts processes
or invents a protocol: the collectives are torch's.

How a step is shared (``Trainer``): every rank draws the same global batch (same seed, same
order), keeps its contiguous share of the rows (:func:`shard`), and weights its loss by its
share of the global batch's examples; :class:`GradReducer` then sums the gradients over ranks
(bucketed all-reduce, started during the backward as each bucket's gradients become final),
so every rank applies exactly the global batch's mean gradient and the parameters stay
identical. The NumPy/Numba arrays are shared with torch tensors without copies
(``torch.from_numpy``).
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np

#: gradient bucket size (as torch DDP's default: 25 MB)
BUCKET_BYTES = 25 * 2**20


def _dist():
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a test dependency
        return None
    return dist if dist.is_available() else None


def wanted() -> bool:
    """Whether this process was launched as one of several workers (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group with more than one rank is running."""
    dist = _dist()
    return dist is not None and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return _dist().get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return _dist().get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files, logs and progress (rank 0)."""
    return rank() == 0


def local_device(device: str) -> str:
    """``cuda`` → ``cuda:LOCAL_RANK`` under torchrun (one GPU per worker); others unchanged."""
    if device == "cuda" and wanted():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def setup(ops) -> bool:
    """Join the process group torchrun described, once (gloo, or NCCL when ``ops`` is a CUDA
    torch backend); returns whether training is data-parallel."""
    if not wanted():
        return False
    dist = _dist()
    if dist is None:
        raise RuntimeError("WORLD_SIZE > 1 asks for data-parallel training, which needs torch.distributed")
    if not dist.is_initialized():
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE is set but {key} is not: launch with torchrun")
        cuda = ops.name == "torch" and str(ops.device).startswith("cuda")
        if cuda:
            import torch

            torch.cuda.set_device(ops._device)
        timeout = timedelta(seconds=float(os.environ.get("MINIDISTILL_DIST_TIMEOUT", "600")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return active()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if active():
        _dist().barrier()


def shard(n: int, r: int | None = None, world: int | None = None) -> slice:
    """The contiguous rows ``[lo, hi)`` of ``n`` that rank ``r`` of ``world`` takes (the first
    ``n % world`` ranks take one more); empty when ``n < world``."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    lo = r * base + min(r, extra)
    return slice(lo, lo + base + (1 if r < extra else 0))


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values) -> np.ndarray:
    """Element-wise sum over ranks of a small float64 vector (losses, counts)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not active():
        return arr
    import torch

    t = torch.from_numpy(arr.copy())
    _dist().all_reduce(t)
    return t.numpy()


def _as_torch(a):
    """A torch view of a backend array (no copy for NumPy arrays and torch tensors)."""
    import torch

    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.ascontiguousarray(a))


def broadcast_parameters(params, src: int = 0) -> None:
    """Make every rank's parameters equal to rank ``src``'s (the start of a data-parallel run,
    as torch DDP does at construction)."""
    if not active():
        return
    dist = _dist()
    for p in params:
        t = _as_torch(p.data).contiguous()
        dist.broadcast(t, src=src)
        if not (p.backend.name == "torch" and t.data_ptr() == p.data.data_ptr()):
            p.data = p.backend.asarray(t.numpy() if p.backend.name != "torch" else t, dtype=p.dtype.name)


class GradReducer:
    """Sums the gradients of ``params`` over ranks, in buckets of about :data:`BUCKET_BYTES`.

    Use :meth:`hook` as the tape's ``on_grad_ready`` hook during the last backward of a step:
    a bucket's all-reduce starts (asynchronously) as soon as all of its parameters have a
    final gradient, so communication overlaps the rest of the backward. :meth:`finish` starts
    what is left, waits, and writes the sums back into ``.grad``. A parameter no rank gave a
    gradient keeps ``grad = None``, as in a single process (the optimisers skip it).

    Buckets follow the reverse of ``params``'s order (the backward reaches the last layers
    first), as torch DDP's do.
    """

    def __init__(self, params, bucket_bytes: int = BUCKET_BYTES):
        self.params = [p for p in params]
        self.buckets: list[list[int]] = []
        size, current = 0, []
        for i in reversed(range(len(self.params))):
            p = self.params[i]
            current.append(i)
            size += int(np.prod(grad_shape(p))) * np.dtype(p.dtype).itemsize
            if size >= bucket_bytes:
                self.buckets.append(current)
                size, current = 0, []
        if current:
            self.buckets.append(current)
        self.where = {id(self.params[i]): b for b, idx in enumerate(self.buckets) for i in idx}
        self.reset()

    def reset(self) -> None:
        """Forget the pending reductions (the start of a step)."""
        self.pending = [len(b) for b in self.buckets]
        self.launched: dict[int, tuple] = {}

    def hook(self, leaf) -> None:
        """The ``on_grad_ready`` hook: ``leaf``'s gradient is final."""
        b = self.where.get(id(leaf))
        if b is None or b in self.launched:
            return
        self.pending[b] -= 1
        if self.pending[b] == 0:
            self._launch(b)

    def _launch(self, b: int) -> None:
        import torch

        dist = _dist()
        idx = self.buckets[b]
        dtype = torch.float64 if any(np.dtype(self.params[i].dtype) == np.float64 for i in idx) else torch.float32
        parts, flags = [], []
        for i in idx:
            p = self.params[i]
            has = p.grad is not None
            flags.append(1.0 if has else 0.0)
            n = int(np.prod(grad_shape(p)))
            parts.append(_as_torch(p.grad).reshape(-1).to(dtype) if has else
                         torch.zeros(n, dtype=dtype, device=_device_of(p)))
        flat = torch.cat(parts + [torch.tensor(flags, dtype=dtype, device=parts[0].device)])
        work = dist.all_reduce(flat, async_op=True)
        self.launched[b] = (flat, work)

    def finish(self) -> None:
        """Reduce the buckets not started yet, wait for all, and write the sums into ``.grad``."""
        for b in range(len(self.buckets)):
            if b not in self.launched:
                self._launch(b)
        for b, (flat, work) in self.launched.items():
            work.wait()
            idx = self.buckets[b]
            flags = flat[-len(idx):]
            offset = 0
            for j, i in enumerate(idx):
                p = self.params[i]
                shape = grad_shape(p)
                n = int(np.prod(shape))
                if float(flags[j]) > 0:
                    g = flat[offset:offset + n].reshape(shape)
                    g = g.numpy() if p.backend.name != "torch" else g
                    p.grad = p.backend.asarray(g, dtype=p.dtype.name)
                else:
                    p.grad = None
                offset += n
        self.reset()


def grad_shape(p) -> tuple:
    """The shape of ``p.grad``: ``p``'s own, or (out, rank) for a gradient kept in a low-rank
    basis (``p.grad_basis``, whose ``rank`` is the basis size; see ``train/optim.py``)."""
    basis = getattr(p, "grad_basis", None)
    return (p.shape[0], basis.rank) if basis is not None else tuple(p.shape)


def _device_of(p):
    import torch

    return p.data.device if isinstance(p.data, torch.Tensor) else "cpu"
