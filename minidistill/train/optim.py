"""Optimisers over minidistill Parameters, on any backend: AdamW and SGD.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019):

    m ← β₁ m + (1 − β₁) g            v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr · λ · θ               (decoupled decay, before the Adam step, as PyTorch)
    θ ← θ − lr · m̂ / (√v̂ + ε)        m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

Updates are done in place on the backend arrays, outside the tape.
"""

from __future__ import annotations

import numpy as np


def no_decay(name: str) -> bool:
    """BERT's convention: biases and LayerNorm weights get no weight decay."""
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases / LayerNorm parameters without decay.

    A model that defines ``optimizer_groups(weight_decay)`` (e.g. WID's, whose compactors have
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
        """Forget every parameter's gradient (and CompAct's compressed ones)."""
        for p in self.parameters():
            p.grad = None
            if getattr(p, "compact_grad", None) is not None:
                p.compact_grad = None

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
                if getattr(p, "compact_grad", None) is not None:
                    self._compressed_step(p, lr, b1, b2, eps, wd)
                if p.grad is None:
                    continue
                ops = p.backend
                st = self.state.get(id(p))
                if st is None:
                    st = self.state[id(p)] = {"m": ops.zeros_like(p.data), "v": ops.zeros_like(p.data)}
                ops.adamw_update(p.data, p.grad, st["m"], st["v"], lr, b1, b2, eps, wd, self.step_count)


    def _compressed_step(self, p, lr, b1, b2, eps, wd) -> None:
        """CompAct: Adam's moments of the compressed gradient Ĝ (d_out, r), the update mapped
        back with Pᵀ (see ``compress/compact.py``)."""
        from ..compress.compact import compressed_direction_update

        ops, g = p.backend, p.compact_grad
        st = self.state.get(id(p))
        if st is None or tuple(st["cm"].shape) != tuple(g.shape):
            st = self.state[id(p)] = {**(st or {}), "cm": ops.zeros_like(g), "cv": ops.zeros_like(g)}
        st["cm"] *= b1
        st["cm"] += (1.0 - b1) * g
        st["cv"] *= b2
        st["cv"] += (1.0 - b2) * (g * g)
        c1, c2 = 1.0 - b1**self.step_count, 1.0 - b2**self.step_count
        direction = (st["cm"] / c1) / (ops.sqrt(st["cv"] / c2) + eps)  # (out, r)
        if wd:
            p.data *= 1.0 - lr * wd
        compressed_direction_update(p, direction, lr)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled) weight decay."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0:
            raise ValueError(f"invalid SGD hyper-parameters lr={lr}, momentum={momentum}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step(self) -> None:
        self.step_count += 1
        for g in self.param_groups:
            for p in g["params"]:
                if getattr(p, "compact_grad", None) is not None:  # CompAct: momentum in the r-space
                    from ..compress.compact import compressed_direction_update

                    d = p.compact_grad
                    if g["momentum"]:
                        st = self.state.setdefault(id(p), {})
                        st["cbuf"] = p.backend.copy(d) if "cbuf" not in st else st["cbuf"] * g["momentum"] + d
                        d = st["cbuf"]
                    if g["weight_decay"]:
                        p.data *= 1.0 - g["lr"] * g["weight_decay"]
                    compressed_direction_update(p, d, g["lr"])
                if p.grad is None:
                    continue
                d = p.grad + g["weight_decay"] * p.data if g["weight_decay"] else p.grad
                if g["momentum"]:
                    st = self.state.setdefault(id(p), {})
                    if "buf" not in st:
                        st["buf"] = p.backend.copy(d)
                    else:
                        st["buf"] *= g["momentum"]
                        st["buf"] += d
                    d = st["buf"]
                p.data -= g["lr"] * d
