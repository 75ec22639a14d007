"""Helpers for the course's task tests (``@pytest.mark.taskN_K``).

Each task's tests check that task alone: they call the function it fills in directly and
compare with an independent reference (PyTorch autograd, transformers, an identity), so a
student copy where one task is solved scores exactly that task.
"""

from __future__ import annotations

import numpy as np
import pytest


def rng(seed: int = 0) -> np.random.Generator:
    """A seeded generator."""
    return np.random.default_rng(seed)


@pytest.fixture
def torch():
    """PyTorch, the reference for gradients (part of the test extra)."""
    return pytest.importorskip("torch")
