"""Backends: the array math behind the core, selectable per process, per block or explicitly.

* per process: the environment variable ``MINIDISTILL_BACKEND`` (``numpy``, ``numba``,
  ``torch`` or ``torch:cuda``); the default is ``numba``.
* per block: ``with minidistill.use_backend("numpy"): ...`` (a ContextVar, so it is
  safe across threads and asyncio tasks).
* explicitly: ``Tensor(data, backend="torch")`` or ``model.to("torch", device="cuda")``.

Backends are registered by name with a factory; instances are cached per (name, device) so
that two tensors made under the same backend share one random generator.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable

from .base import Ops

_FACTORIES: dict[str, Callable[[str | None], Ops]] = {}
_INSTANCES: dict[tuple[str, str | None], Ops] = {}
_CURRENT: contextvars.ContextVar[Ops | None] = contextvars.ContextVar("minidistill_backend", default=None)


def register_backend(name: str, factory: Callable[[str | None], Ops]) -> None:
    """Register ``factory(device) -> Ops`` under ``name``."""
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    """Names of the registered backends (torch is listed even when not installed)."""
    return sorted(_FACTORIES)


def _split(spec: str, device: str | None):
    name, _, dev = spec.partition(":")
    return name, (dev or device)


def get_backend(spec: "str | Ops | None" = None, device: str | None = None) -> Ops:
    """Return the backend named by ``spec`` (``"numba"``, ``"torch:cuda"``, an Ops, or None
    for the current one)."""
    if spec is None:
        return current_backend()
    if isinstance(spec, Ops):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"backend must be a name or an Ops instance, got {type(spec).__name__}")
    name, dev = _split(spec, device)
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    if name == "torch":
        dev = dev or "cpu"
    key = (name, dev)
    if key not in _INSTANCES:
        _INSTANCES[key] = _FACTORIES[name](dev)
    return _INSTANCES[key]


def target_backend(current: Ops, backend=None, device: str | None = None) -> Ops:
    """Where ``.to(backend, device)`` moves something that lives on ``current``: a device
    alone keeps the backend and changes the device; neither keeps ``current``."""
    if backend is not None:
        return get_backend(backend, device)
    if device is not None:
        return get_backend(current.name, device)
    return current


def current_backend() -> Ops:
    """The backend in force: the innermost ``use_backend`` block, else ``MINIDISTILL_BACKEND``."""
    ops = _CURRENT.get()
    if ops is None:
        ops = get_backend(os.environ.get("MINIDISTILL_BACKEND", "numba"))
    return ops


@contextlib.contextmanager
def use_backend(spec: "str | Ops", device: str | None = None):
    """Make ``spec`` the current backend inside a ``with`` block."""
    token = _CURRENT.set(get_backend(spec, device))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def _numpy_factory(device):
    if device not in (None, "cpu"):
        raise ValueError(f"the numpy backend runs on the CPU only, not {device!r}")
    from .numpy_ops import NumpyOps

    return NumpyOps()


def _numba_factory(device):
    if device not in (None, "cpu"):
        raise ValueError(f"the numba backend runs on the CPU only, not {device!r}")
    from .numba_ops import NumbaOps

    return NumbaOps()


def _torch_factory(device):
    from .torch_ops import TorchOps

    return TorchOps(device or "cpu")


register_backend("numpy", _numpy_factory)
register_backend("numba", _numba_factory)
register_backend("torch", _torch_factory)

__all__ = [
    "Ops",
    "available_backends",
    "current_backend",
    "get_backend",
    "register_backend",
    "target_backend",
    "use_backend",
]
