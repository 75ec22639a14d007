"""Central-difference gradient checking, for tests, tutorials and course assignments.

``gradcheck(fn, *inputs)`` compares the tape's gradient of a random projection of
``fn(*inputs)`` with central finite differences, element by element, in float64.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message says where."""


def central_difference(scalar, array, eps: float = 1e-6) -> np.ndarray:
    """Numerical gradient of ``scalar()`` with respect to the entries of ``array``.

    Each entry is nudged in place to ``x + eps`` and ``x - eps`` (and restored), giving
    ``(f(x + eps) - f(x - eps)) / (2 eps)``: error O(eps²), where a one-sided difference has O(eps).

    Args:
        scalar: a function of no arguments that reads ``array`` and returns a float.
        array: a writable NumPy array (or any array supporting ``a[idx]`` reads and writes).
        eps: the step.

    Returns:
        A float64 NumPy array of ``array``'s shape.
    """
    # BEGIN TASK 0.3
    numeric = np.zeros(tuple(array.shape))
    flat = numeric.reshape(-1)
    for i in range(flat.size):
        idx = np.unravel_index(i, numeric.shape)
        old = array[idx].item()
        array[idx] = old + eps
        up = scalar()
        array[idx] = old - eps
        down = scalar()
        array[idx] = old
        flat[i] = (up - down) / (2 * eps)
    return numeric
    # END TASK 0.3


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4,
              seed: int = 0, raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn`` with respect to every input that requires grad.

    Args:
        fn: maps the input tensors to one output tensor (any shape).
        inputs: tensors (float64 recommended; float32 gives noisy differences) and other
            arguments passed through unchanged.
        eps: finite-difference step.
        atol: absolute tolerance: pass when ``|analytic - numeric| <= atol + rtol * |numeric|``.
        rtol: relative tolerance (see ``atol``).
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
        numeric = central_difference(scalar, t.data, eps)
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
