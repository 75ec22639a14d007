"""minidistill: compress BERT-style transformers, from scratch."""
from .backends import available_backends, current_backend, get_backend, use_backend
from .core import Tensor, gradcheck, no_grad, tensor
__version__ = "0.1.0"
