"""Keep OpenBLAS's and Numba's thread pools from fighting over the cores.

After a BLAS call OpenBLAS's worker threads spin for a while (2^28 cycles by default)
waiting for more work; Numba's OpenMP workers spin likewise after a parallel kernel. On a
small machine each pool's spinning steals the cores the other needs: measured on 2 cores,
the Numba-backend BERT forward took 1.61 s with the defaults and 1.09 s with both pools
told to sleep when idle (``benchmarks/RESULTS.md``).

Both settings are read when a library starts its threads, so they must be in the
environment before NumPy (OpenBLAS) and the first parallel Numba kernel start. Importing
minidistill sets them, unless already set by the user or ``MINIDISTILL_THREADS=keep``.
"""

from __future__ import annotations

import os
import sys

SETTINGS = {
    "OMP_WAIT_POLICY": "PASSIVE",  # OpenMP workers (Numba's omp layer) sleep when idle
    "OPENBLAS_THREAD_TIMEOUT": "4",  # OpenBLAS workers spin 2^4 cycles, not 2^28
}


def configure() -> dict:
    """Set the thread-pool variables that are not set yet; return what was set.

    ``OPENBLAS_THREAD_TIMEOUT`` only takes effect if NumPy was not imported before
    minidistill; the returned dict says which settings were applied.
    """
    if os.environ.get("MINIDISTILL_THREADS") == "keep":
        return {}
    applied = {}
    for key, value in SETTINGS.items():
        if key in os.environ:
            continue
        if key == "OPENBLAS_THREAD_TIMEOUT" and "numpy" in sys.modules:
            continue  # too late: OpenBLAS has read its environment already
        os.environ[key] = value
        applied[key] = value
    return applied
