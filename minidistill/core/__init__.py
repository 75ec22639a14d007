"""The autograd-light core: :class:`Tensor`, the tape of :class:`Function` s, ``no_grad``
and ``gradcheck``. The differentiable operations live in :mod:`minidistill.core.functions`."""

from . import functions
from .gradcheck import GradcheckError, gradcheck
from .tensor import (
    BackendMismatchError,
    Context,
    Function,
    Tensor,
    autocast,
    autocast_dtype,
    enable_grad,
    get_default_dtype,
    is_grad_enabled,
    no_grad,
    set_default_dtype,
    tensor,
)

__all__ = [
    "BackendMismatchError",
    "Context",
    "Function",
    "GradcheckError",
    "Tensor",
    "autocast",
    "autocast_dtype",
    "enable_grad",
    "functions",
    "get_default_dtype",
    "gradcheck",
    "is_grad_enabled",
    "no_grad",
    "set_default_dtype",
    "tensor",
]
