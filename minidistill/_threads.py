"""Keep OpenBLAS's and Numba's thread pools from fighting over the cores, whatever was
imported first.

After a BLAS call OpenBLAS's worker threads spin for a while (2^28 cycles by default)
waiting for more work; Numba's OpenMP workers spin likewise after a parallel kernel. On a
small machine each pool's spinning steals the cores the other needs: measured on 2 cores,
the Numba-backend BERT forward took 1.61 s with the defaults and 1.09 s with both pools
told to sleep when idle (``benchmarks/RESULTS.md``).

Both settings are read when a library starts its threads. Importing minidistill puts them in
the environment (unless already set by the user, or ``MINIDISTILL_THREADS=keep``):

* ``OMP_WAIT_POLICY=PASSIVE`` is read when Numba's OpenMP pool starts (its first parallel
  kernel), which is after the import in any order.
* ``OPENBLAS_THREAD_TIMEOUT=4`` is read when OpenBLAS loads, i.e. with NumPy. When NumPy was
  imported before minidistill, OpenBLAS has already read it; :func:`retune_openblas` then
  applies it at run time: it asks the loaded OpenBLAS to read its environment again
  (``openblas_read_env``) and restarts its thread pool (``blas_thread_shutdown_``; the next
  BLAS call starts the threads with the new timeout), through the library's own exported
  functions, found the way threadpoolctl finds them (the shared objects mapped into the
  process).
* When an OpenMP runtime (``libgomp``) is already loaded, torch's most often (torch imported
  first), it has read its wait policy already, and Numba's OpenMP layer would share it (one
  ``libgomp.so.1`` per process): its workers would then spin after every kernel. Numba then
  gets its own ``workqueue`` threading layer instead (``NUMBA_THREADING_LAYER``, read before
  its first parallel kernel). Measured on 2 cores (MiniLM-L6 forward, 32 × 128, medians): torch
  first 1.58 s with the shared OpenMP pool, 1.31 s with workqueue, as fast as minidistill
  first (1.31 s, OpenMP).
"""

from __future__ import annotations

import ctypes
import os
import sys

SETTINGS = {
    "OMP_WAIT_POLICY": "PASSIVE",  # OpenMP workers (Numba's omp layer) sleep when idle
    "OPENBLAS_THREAD_TIMEOUT": "4",  # OpenBLAS workers spin 2^4 cycles, not 2^28
}


def configure() -> dict:
    """Set the thread-pool variables that are not set yet; return what was set (and, under
    ``"openblas"``, the OpenBLAS libraries retuned at run time when NumPy came first)."""
    if os.environ.get("MINIDISTILL_THREADS") == "keep":
        return {}
    applied = {}
    if ("OMP_WAIT_POLICY" not in os.environ and "NUMBA_THREADING_LAYER" not in os.environ
            and loaded_libraries("gomp")):  # an OpenMP runtime started with the default (spinning) policy
        os.environ["NUMBA_THREADING_LAYER"] = applied["NUMBA_THREADING_LAYER"] = "workqueue"
        numba_config = getattr(sys.modules.get("numba"), "config", None)
        if numba_config is not None:  # imported already: its config read the environment before
            numba_config.THREADING_LAYER = "workqueue"
    for key, value in SETTINGS.items():
        if key in os.environ:
            continue
        os.environ[key] = value
        applied[key] = value
    if "OPENBLAS_THREAD_TIMEOUT" in applied and "numpy" in sys.modules:
        applied["openblas"] = retune_openblas()  # too late for the environment alone
    return applied


def loaded_libraries(fragment: str) -> list[str]:
    """Paths of the shared objects mapped into this process whose file name contains
    ``fragment`` (Linux's ``/proc/self/maps``; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if fragment in os.path.basename(p).lower() and ".so" in os.path.basename(p))


def loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS shared objects mapped into this process."""
    return loaded_libraries("openblas")


def _openblas_handles():
    """``(path, library)`` for each loaded OpenBLAS, opened without loading anything new."""
    for path in loaded_openblas():
        try:
            yield path, ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue


def retune_openblas() -> list[str]:
    """Make every loaded OpenBLAS re-read ``OPENBLAS_THREAD_TIMEOUT`` and restart its threads
    with it; returns the libraries retuned (those exporting the functions needed)."""
    done = []
    for path, lib in _openblas_handles():
        try:
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except AttributeError:
            continue
        read_env()
        shutdown()  # the next BLAS call starts the pool again, with the timeout just read
        done.append(path)
    return done


def openblas_timeouts() -> dict:
    """``{library: OPENBLAS_THREAD_TIMEOUT it has read}`` for each loaded OpenBLAS (0: unset)."""
    out = {}
    for path, lib in _openblas_handles():
        try:
            out[path] = int(lib.openblas_thread_timeout())
        except AttributeError:
            continue
    return out
