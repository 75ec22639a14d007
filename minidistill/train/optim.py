"""Optimisers over minidistill Parameters, on any backend: AdamW and SGD.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019):

    m ← β₁ m + (1 − β₁) g            v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr · λ · θ               (decoupled decay, before the Adam step, as PyTorch)
    θ ← θ − lr · m̂ / (√v̂ + ε)        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

Updates are done in place on the backend arrays, outside the tape.

A gradient in a low-rank basis (GaLore, CompAct): a parameter may carry ``grad_basis``, an
object with ``lift(U) -> array`` of the parameter's shape. Its ``grad`` then holds the
gradient's coordinates in that basis (e.g. (d_out, r) for a (d_out, d_in) weight); the
optimiser keeps its state in those coordinates, forms the update there and adds
``lift(update)`` to the parameter. Weight decay acts on the parameter itself.
"""

from __future__ import annotations

import numpy as np


def no_decay(name: str) -> bool:
    """BERT's convention: biases and LayerNorm weights get no weight decay."""
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases / LayerNorm parameters without decay.

    A model that defines ``optimizer_groups(weight_decay)`` (a method whose own parameters have
    their own learning rate) chooses its own groups."""
    if hasattr(model, "optimizer_groups"):
        return [g for g in model.optimizer_groups(weight_decay) if g["params"]]
    return decay_groups(model.named_parameters(), weight_decay)


def decay_groups(named_parameters, weight_decay: float) -> list[dict]:
    """``(name, parameter)`` pairs that require grad, split into a decayed group and a group of
    biases / LayerNorm parameters without decay."""
    decay, plain = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (plain if no_decay(name) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class Optimizer:
    """Base class: parameter groups, ``zero_grad`` and ``state_dict``."""

    defaults: dict = {}

    def __init__(self, params, **defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[int, dict] = {}
        self.step_count = 0

    def parameters(self):
        """Every parameter of every group."""
        for g in self.param_groups:
            yield from g["params"]

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    def _state_like_grad(self, p, *names) -> dict:
        """The state of ``p``: ``names`` as zeros shaped like its gradient, made anew when the
        gradient's shape changed (a low-rank basis of another rank)."""
        st = self.state.get(id(p))
        if st is None or any(tuple(st[n].shape) != tuple(p.grad.shape) for n in names if n in st):
            st = self.state[id(p)] = {n: p.backend.zeros_like(p.grad) for n in names}
        return st

    @staticmethod
    def _apply_in_basis(p, basis, update, lr: float, weight_decay: float) -> None:
        """``θ ← (1 − lr·λ) θ + lift(update)`` for a parameter whose gradient lives in ``basis``."""
        if weight_decay:
            p.data *= 1.0 - lr * weight_decay
        p.data += basis.lift(update)

    def step(self) -> None:  # pragma: no cover - interface
        """Update the parameters from their gradients."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Step count, hyper-parameters and per-parameter state as NumPy arrays (by position)."""
        params = list(self.parameters())
        state = {}
        for i, p in enumerate(params):
            if id(p) in self.state:
                # copies: the live moment arrays are updated in place by ``step``
                state[i] = {k: np.array(p.backend.to_numpy(v), copy=True) for k, v in self.state[id(p)].items()}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"step": self.step_count, "groups": groups, "state": state}

    def load_state_dict(self, sd: dict) -> None:
        """Restore a :meth:`state_dict` (the parameters must be the same, in the same order)."""
        params = list(self.parameters())
        if len(sd["groups"]) != len(self.param_groups):
            raise ValueError("optimizer state has a different number of parameter groups")
        for g, saved in zip(self.param_groups, sd["groups"]):
            g.update(saved)
        self.state = {}
        for i, st in sd["state"].items():
            p = params[int(i)]
            self.state[id(p)] = {k: p.backend.copy(p.backend.asarray(v)) for k, v in st.items()}
        self.step_count = int(sd["step"])


class AdamW(Optimizer):
    """Adam with decoupled weight decay.

    Args:
        params: parameters or groups (see :func:`param_groups`).
        lr: learning rate, as in PyTorch's ``AdamW`` (same defaults for every argument).
        betas: the moments' decay rates.
        eps: added to the denominator.
        weight_decay: decoupled weight decay.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def step(self) -> None:
        self.step_count += 1
        for g in self.param_groups:
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                ops = p.backend
                st = self._state_like_grad(p, "m", "v")
                basis = getattr(p, "grad_basis", None)
                if basis is None:
                    ops.adamw_update(p.data, p.grad, st["m"], st["v"], lr, b1, b2, eps, wd, self.step_count)
                else:  # the same Adam step on the coordinates, from zero, then lifted
                    update = ops.zeros_like(p.grad)
                    ops.adamw_update(update, p.grad, st["m"], st["v"], lr, b1, b2, eps, 0.0, self.step_count)
                    self._apply_in_basis(p, basis, update, lr, wd)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled) weight decay."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0:
            raise ValueError(f"invalid SGD hyper-parameters lr={lr}, momentum={momentum}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step(self) -> None:
        self.step_count += 1
        for g in self.param_groups:
            lr, wd = g["lr"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                basis = getattr(p, "grad_basis", None)
                d = p.grad + wd * p.data if wd and basis is None else p.grad
                if g["momentum"]:
                    st = self.state.setdefault(id(p), {})
                    if "buf" not in st or tuple(st["buf"].shape) != tuple(d.shape):
                        st["buf"] = p.backend.copy(d)
                    else:
                        st["buf"] *= g["momentum"]
                        st["buf"] += d
                    d = st["buf"]
                if basis is None:
                    p.data -= lr * d
                else:
                    self._apply_in_basis(p, basis, -lr * d, lr, wd)
