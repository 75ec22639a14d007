"""Central-difference gradient checking, for tests, tutorials and course assignments.

``gradcheck(fn, *inputs)`` compares the tape's gradient of a random projection of
``fn(*inputs)`` with central finite differences, element by element, in float64.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message says where."""


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              seed: int = 0, raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn`` with respect to every input that requires grad.

    Args:
        fn: maps the input tensors to one output tensor (any shape).
        inputs: tensors (float64 recommended; float32 gives noisy differences) and other
            arguments passed through unchanged.
        eps: finite-difference step.
        atol, rtol: tolerance, ``|analytic - numeric| <= atol + rtol * |numeric|``.
        seed: seed of the random output projection ``w`` (the checked scalar is ``Σ w·fn``).
        raise_exception: raise :class:`GradcheckError` on a mismatch (else return False).

    Returns:
        True when every gradient matches.
    """
    wrt = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad")
    for t in wrt:
        if t.dtype != np.float64:
            raise ValueError(f"gradcheck: inputs should be float64 for reliable differences, got {t.dtype}")
    out = fn(*inputs)
    ops = out.backend
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    w = ops.asarray(weights, dtype=out.dtype)

    def scalar() -> float:
        with no_grad():
            return float(ops.to_numpy(ops.sum(fn(*inputs).data * w)))

    for t in wrt:
        t.grad = None
    out.backward(w)
    for k, t in enumerate(wrt):
        analytic = np.zeros(t.shape) if t.grad is None else t.backend.to_numpy(t.grad).astype(np.float64)
        numeric = np.zeros(t.shape)
        flat = numeric.reshape(-1)
        for i in range(flat.size):
            idx = np.unravel_index(i, t.shape)
            old = t.data[idx].item()
            t.data[idx] = old + eps
            up = scalar()
            t.data[idx] = old - eps
            down = scalar()
            t.data[idx] = old
            flat[i] = (up - down) / (2 * eps)
        bad = np.abs(analytic - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            if not raise_exception:
                return False
            j = np.unravel_index(int(np.argmax(np.abs(analytic - numeric))), t.shape)
            raise GradcheckError(
                f"gradient of input {k} (shape {t.shape}) mismatches at {bad.sum()} of {bad.size} "
                f"entries; worst at {tuple(int(v) for v in j)}: analytic {analytic[j]:.8g}, numeric {numeric[j]:.8g}"
            )
    return True
