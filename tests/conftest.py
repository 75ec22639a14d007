"""Shared fixtures: backends, the real MiniLM-L6 checkpoint, and input helpers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import minidistill as md

HAS_TORCH = importlib.util.find_spec("torch") is not None
CPU_BACKENDS = ["numpy", "numba"]
ALL_BACKENDS = CPU_BACKENDS + (["torch"] if HAS_TORCH else [])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(pytest.mark.skip(reason="torch is not installed"))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each backend in turn, made current for the test."""
    with md.use_backend(request.param) as ops:
        yield ops


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """The NumPy and Numba backends in turn."""
    with md.use_backend(request.param) as ops:
        yield ops


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2 checkpoint (fetched into the cache on first use)."""
    return md.assets.path("minilm-l6")


SENTENCES = [
    "The film is a quiet triumph of patient storytelling.",
    "Dull, overlong and predictable.",
    "A distilled model keeps most of what its teacher knows, at a fraction of the cost.",
    "Short one.",
]


def rand(shape, seed=0, scale=1.0, dtype="float64"):
    """Seeded normal samples."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
