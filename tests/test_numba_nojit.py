"""The Numba kernels run as plain Python with ``NUMBA_DISABLE_JIT=1`` (the debugging mode
students use) and still match the NumPy reference and the gradient checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kernels_and_gradchecks_without_jit():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/test_backends.py::test_numba_kernels_match_numpy_reference",
           "tests/test_core_ops.py", "tests/test_lstm.py", "-k", "numba"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
