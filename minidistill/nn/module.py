"""``Module`` and ``Parameter``: the containers every layer and model is built from.

Modules find their parameters and sub-modules by walking their attributes in the order they
were assigned (as PyTorch does), so a model's parameter names follow its attribute names:
``encoder.layer.0.attention.self.query.weight``. A parameter reachable under two names
(shared weights) is counted once by ``named_parameters()``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..backends import get_backend, target_backend
from ..core.tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a trainable weight of a module (``requires_grad=True`` by default)."""

    def __init__(self, data, requires_grad: bool = True, backend=None, dtype=None):
        super().__init__(data, requires_grad=requires_grad, backend=backend, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, backend={self.backend.name})"


class StateDictError(KeyError):
    """``load_state_dict`` found missing, unexpected or mis-shaped keys."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class Module:
    """Base class of layers and models.

    Subclasses assign :class:`Parameter` s, sub-modules and :class:`ModuleList` s as
    attributes in ``__init__`` and define ``forward``.
    """

    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - interface
        """Compute the module's output."""
        raise NotImplementedError

    # ------------------------------------------------------------ traversal
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Direct sub-modules with their attribute names."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator["Module"]:
        """Direct sub-modules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True, _seen=None):
        """This module and every sub-module, with dotted names."""
        seen = set() if _seen is None else _seen
        if remove_duplicate:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, remove_duplicate, seen)

    def modules(self) -> Iterator["Module"]:
        """This module and every sub-module."""
        for _, m in self.named_modules():
            yield m

    def _own_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield name, value

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name; a shared parameter is listed once (first name)."""
        seen: set[int] = set()
        for mod_name, mod in self.named_modules(prefix, remove_duplicate=remove_duplicate):
            for name, p in mod._own_parameters():
                if remove_duplicate and id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        """Every (unique) parameter."""
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of unique parameter elements (optionally only those requiring grad)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Parameter arrays by name (every name, shared ones included), as backend arrays."""
        return {name: p.data for name, p in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state: dict, strict: bool = True) -> dict:
        """Copy arrays from ``state`` into this module's parameters (never sharing memory).

        Args:
            state: name → array (NumPy, torch or backend array).
            strict: raise :class:`StateDictError` if any key is missing or unexpected.

        Returns:
            ``{"missing": [...], "unexpected": [...]}``. Mis-shaped keys always raise.
        """
        own = dict(self.named_parameters(remove_duplicate=False))
        names_of = {}  # a parameter shared under several names (tied, or a shared layer) needs one of them
        for k, p in own.items():
            names_of.setdefault(id(p), []).append(k)
        missing = [k for k in own if k not in state and not any(n in state for n in names_of[id(own[k])])]
        unexpected = [k for k in state if k not in own]
        mis_shaped = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {own[k].shape}"
            for k in own
            if k in state and tuple(state[k].shape) != own[k].shape
        ]
        mis_shaped += [
            f"{k}: checkpoint {np.dtype(_dtype_of(state[k]))} vs model {own[k].dtype} (an int8 model's config with "
            "float weights, or the reverse?)"
            for k in own
            if k in state and (np.dtype(_dtype_of(state[k])).kind == "f") != (np.dtype(own[k].dtype).kind == "f")
        ]
        problems = []
        if mis_shaped:
            problems.append("mis-shaped keys: " + "; ".join(mis_shaped))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise StateDictError(f"cannot load state dict into {type(self).__name__}: " + " | ".join(problems))
        for k, p in own.items():
            if k in state:
                # always a copy: parameters are updated in place by the optimizers, and must
                # never share memory with the caller's arrays (another model's, a checkpoint's)
                p.data = p.backend.copy(p.backend.asarray(_to_host(state[k]), dtype=p.dtype))
                p.grad = None
        return {"missing": missing, "unexpected": unexpected}

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        """Set training mode (dropout on) for this module and every sub-module."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        """Set evaluation mode (dropout off)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def to(self, backend=None, device: str | None = None, dtype=None) -> "Module":
        """Move every parameter to ``backend`` (and ``device``), optionally casting the
        floating-point ones to ``dtype`` (integer weights, as int8 ones, keep their type); in place."""
        for p in self.parameters():
            target = target_backend(p.backend, backend, device)
            data = p.data if target is p.backend else target.asarray(_to_host(p.data))
            if dtype is not None and np.dtype(p.dtype).kind == "f":  # int8 weights keep their type
                data = target.cast(data, dtype)
            p.data, p.backend, p.grad = data, target, None
        return self

    @property
    def backend(self):
        """The backend of the first parameter."""
        for p in self.parameters():
            return p.backend
        return get_backend(None)

    def extra_repr(self) -> str:
        """Extra text shown in ``repr`` (override in layers)."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, child in children:
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules whose names are their indices (``layer.0``, ``layer.1``, …)."""

    def __init__(self, modules=()):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return iter([m for _, m in self.named_children()])

    def __getitem__(self, i):
        items = list(self)
        if isinstance(i, slice):
            return ModuleList(items[i])
        return items[i]

    def append(self, module: Module) -> "ModuleList":
        """Add a module at the end."""
        setattr(self, str(len(self)), module)
        return self


def _dtype_of(a):
    """The NumPy dtype of a NumPy or torch array."""
    if isinstance(a, np.ndarray):
        return a.dtype
    return _to_host(a[:0] if getattr(a, "ndim", 0) else a).dtype


def _to_host(a):
    """A NumPy view/copy of any array (NumPy, torch on any device)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            a = a.float()
        return a.numpy()
    return np.asarray(a)
