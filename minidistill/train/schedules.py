"""Learning-rate schedules: a multiplier of the base learning rate as a function of the step.

``linear``  linear warmup from 0 to 1 over ``warmup`` steps, then linear decay to 0 at ``total``
            (BERT's schedule);
``cosine``  the same warmup, then half a cosine from 1 to 0;
``constant`` 1 after an optional linear warmup.

Step numbering follows PyTorch's ``LambdaLR``: the multiplier for the first update is the
value at step 0, so with warmup the first update has learning rate 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class Schedule:
    """A learning-rate schedule attached to an optimizer.

    Args:
        optimizer: its groups' ``lr`` is set to ``base_lr · multiplier(step)`` by :meth:`step`.
        kind: ``linear``, ``cosine`` or ``constant``.
        total: the number of training steps. warmup: warmup steps.
    """

    optimizer: object
    kind: str = "linear"
    total: int = 1
    warmup: int = 0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; use one of {SCHEDULES}")
        if self.total < 1 or self.warmup < 0:
            raise ValueError(f"schedule needs total >= 1 and warmup >= 0, got total={self.total}, warmup={self.warmup}")
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def multiplier(self, step: int) -> float:
        """The factor applied to the base learning rate at ``step``."""
        if step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _apply(self):
        m = self.multiplier(self.last_step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * m

    def step(self) -> None:
        """Advance one step (call after ``optimizer.step()``)."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rates in force now."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything needed to continue the schedule."""
        return {"kind": self.kind, "total": self.total, "warmup": self.warmup, "last_step": self.last_step,
                "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, sd: dict) -> None:
        """Restore a :meth:`state_dict`."""
        self.kind, self.total, self.warmup = sd["kind"], sd["total"], sd["warmup"]
        self.base_lrs, self.last_step = list(sd["base_lrs"]), sd["last_step"]
        self._apply()


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale gradients in place so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``).
    """
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    # a gradient kept in a low-rank basis (``grad_basis``) counts with its coordinates' norm
    norm = math.sqrt(sum(float(p.backend.sum(p.grad * p.grad)) for p in grads))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in grads:
            p.grad = p.grad * coef
    return norm
