"""Weight initialisation from one seeded NumPy generator.

Initial weights are drawn on the host and then placed on the backend, so a model built with
the same seed is identical on every backend (which the parity tests rely on).
"""

from __future__ import annotations

import numpy as np

from ..core.tensor import get_default_dtype

_GENERATOR = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed weight initialisation and every backend's generator (dropout, sampling)."""
    global _GENERATOR
    from ..backends import _INSTANCES

    _GENERATOR = np.random.default_rng(seed)
    for ops in _INSTANCES.values():
        ops.seed(seed)


def generator() -> np.random.Generator:
    """The generator used for initial weights."""
    return _GENERATOR


def normal(shape, std: float = 0.02, dtype=None) -> np.ndarray:
    """N(0, std²) samples in the default float dtype."""
    return (_GENERATOR.standard_normal(shape) * std).astype(dtype or get_default_dtype())


def uniform(shape, bound: float, dtype=None) -> np.ndarray:
    """U(-bound, bound) samples."""
    return _GENERATOR.uniform(-bound, bound, size=shape).astype(dtype or get_default_dtype())


def zeros(shape, dtype=None) -> np.ndarray:
    """Zeros in the default float dtype."""
    return np.zeros(shape, dtype=dtype or get_default_dtype())


def ones(shape, dtype=None) -> np.ndarray:
    """Ones in the default float dtype."""
    return np.ones(shape, dtype=dtype or get_default_dtype())


def pca_projection(embeddings: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, V) with V (D, width) the top principal directions of the rows of ``embeddings``."""
    if width > embeddings.shape[1]:
        raise ValueError(f"PCA cannot widen embeddings from {embeddings.shape[1]} to {width}")
    x = np.asarray(embeddings, dtype=np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:width].T
