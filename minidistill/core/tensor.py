"""The Tensor and its tape: reverse-mode automatic differentiation over coarse operations.

Every differentiable operation is a :class:`Function` with a ``forward`` that computes on
raw backend arrays and a hand-written ``backward`` that maps the output's gradient to the
inputs' gradients. ``Function.apply`` runs the forward and, when gradients are wanted, links
the output to its inputs. ``Tensor.backward`` walks that graph in reverse topological order,
summing gradients where a tensor is used more than once (micrograd's engine, with
array-valued nodes).

Conventions (as PyTorch): only leaf tensors that require grad keep ``.grad``; gradients
accumulate across calls to ``backward`` until zeroed; the graph's saved arrays are freed
after ``backward`` unless ``retain_graph=True``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import numpy as np

from ..backends import Ops, get_backend, target_backend

_GRAD_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("minidistill_grad", default=True)
_AUTOCAST: contextvars.ContextVar[str | None] = contextvars.ContextVar("minidistill_autocast", default=None)
_GRAD_READY: contextvars.ContextVar[Any] = contextvars.ContextVar("minidistill_grad_ready", default=None)
_DEFAULT_DTYPE = np.dtype("float32")


class BackendMismatchError(ValueError):
    """Raised when one operation receives tensors that live on different backends."""


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded (inference, parameter updates)."""
    token = _GRAD_ENABLED.set(False)
    try:
        yield
    finally:
        _GRAD_ENABLED.reset(token)


@contextlib.contextmanager
def enable_grad():
    """Re-enable graph recording inside a ``no_grad`` block."""
    token = _GRAD_ENABLED.set(True)
    try:
        yield
    finally:
        _GRAD_ENABLED.reset(token)


LOW_PRECISION = ("bfloat16", "float16")


@contextlib.contextmanager
def autocast(dtype: str | None):
    """Mixed precision inside this block: matrix products (``matmul``, ``linear`` and the
    attention products) run in ``dtype`` (``"bfloat16"`` or ``"float16"``) on float32 inputs
    and return float32; everything else (reductions, softmax, LayerNorm, losses) stays in
    float32. ``autocast(None)`` turns it off inside an enclosing block (the distillation
    losses do). Each Function records the setting at its forward, so its backward runs the
    same products in the same precision wherever ``backward()`` is called.

    Only the torch backend has low-precision matrix kernels; the others refuse.
    """
    if dtype is not None and dtype not in LOW_PRECISION:
        raise ValueError(f"autocast dtype must be one of {LOW_PRECISION} or None, got {dtype!r}")
    token = _AUTOCAST.set(dtype)
    try:
        yield
    finally:
        _AUTOCAST.reset(token)


def autocast_dtype() -> str | None:
    """The low precision in force (``autocast``), or None."""
    return _AUTOCAST.get()


@contextlib.contextmanager
def on_grad_ready(hook):
    """Call ``hook(leaf)`` during ``backward()`` as soon as a leaf's gradient is final (all of
    its uses on the tape are done), so that work on it (a data-parallel all-reduce) can start
    while the rest of the backward runs."""
    token = _GRAD_READY.set(hook)
    try:
        yield
    finally:
        _GRAD_READY.reset(token)


def is_grad_enabled() -> bool:
    """Whether operations are currently recorded on the tape."""
    return _GRAD_ENABLED.get()


def set_default_dtype(dtype) -> None:
    """Set the float dtype used for tensors made from Python numbers and lists."""
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"default dtype must be a float type, got {dtype}")
    _DEFAULT_DTYPE = dtype


def get_default_dtype() -> np.dtype:
    """The float dtype for tensors made from Python numbers and lists (float32)."""
    return _DEFAULT_DTYPE


class Context:
    """Scratch space a Function's forward fills for its backward.

    ``ops`` is the backend; ``needs_input_grad[i]`` says whether input i wants a gradient,
    so a backward can skip work nobody needs. Arrays kept for backward go through
    :meth:`save` so the tape can report how many bytes it holds.
    """

    def __init__(self, ops: Ops, needs_input_grad: tuple[bool, ...]):
        self.ops = ops
        self.needs_input_grad = needs_input_grad
        self.saved: tuple = ()
        #: the low precision of matrix products under ``autocast`` at the forward (or None)
        self.autocast = _AUTOCAST.get()

    def save(self, *arrays) -> None:
        """Keep ``arrays`` for the backward pass (retrieved as ``ctx.saved``)."""
        self.saved = arrays

    def saved_bytes(self) -> int:
        """Bytes held by the arrays saved for backward."""
        total = 0
        for a in self.saved:
            if a is not None and hasattr(a, "shape"):
                total += int(np.prod(a.shape)) * _itemsize(a)
        return total


def _itemsize(a) -> int:
    itemsize = getattr(a, "itemsize", None)
    if itemsize is None:  # torch tensors
        itemsize = a.element_size()
    return int(itemsize)


class Function:
    """Base class of tape operations. Subclasses define ``forward`` and ``backward``.

    ``forward(ctx, *args, **kwargs)`` receives raw arrays for tensor arguments and returns
    one raw array. ``backward(ctx, grad)`` returns one gradient (or None) per positional
    argument of ``forward``.
    """

    @staticmethod
    def forward(ctx: Context, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad):  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> "Tensor":
        """Run the forward and record the operation on the tape when gradients are wanted."""
        ops = _common_backend(cls.__name__, args)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = _GRAD_ENABLED.get() and any(needs)
        ctx = Context(ops, needs)
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor._wrap(out, ops, requires_grad=record)
        if record:  # inputs by their tape entries: the graph never holds an intermediate's data
            result._node = (cls, ctx, tuple(a._entry() if isinstance(a, Tensor) else a for a in args))
        return result


def _common_backend(opname: str, args) -> Ops:
    ops = None
    for a in args:
        if isinstance(a, Tensor):
            if ops is None:
                ops = a.backend
            elif a.backend is not ops:
                raise BackendMismatchError(
                    f"{opname}: got tensors on different backends ({_describe(ops)} and "
                    f"{_describe(a.backend)}); move them to one with .to(backend)"
                )
    if ops is None:
        raise TypeError(f"{opname}: needs at least one Tensor argument")
    return ops


def _describe(ops: Ops) -> str:
    return f"'{ops.name}'" if ops.device == "cpu" and ops.name != "torch" else f"'{ops.name}:{ops.device}'"


class TapeEntry:
    """What the tape keeps of a recorded result: its node ``(Function, Context, inputs)`` and
    shape, never its data.

    A node refers to its inputs through their entries (a leaf: the tensor itself), so an
    intermediate array is freed as soon as no user variable and no ``ctx.saved`` holds it:
    the memory kept for backward is exactly what the Functions chose to save.
    """

    __slots__ = ("_node", "shape", "requires_grad", "grad")

    def __init__(self, shape: tuple):
        self._node = None
        self.shape = shape
        self.requires_grad = True
        self.grad = None

    def __repr__(self):
        name = self._node[0].__name__ if self._node is not None else "freed"
        return f"TapeEntry({name}, shape={self.shape})"


class Tensor:
    """An array on a backend, with an optional gradient and a link into the tape.

    Args:
        data: a list, number, NumPy array, torch tensor or Tensor.
        requires_grad: record operations on this tensor for ``backward``.
        backend: backend name or instance; default: the current backend
            (torch tensors default to the torch backend on their device).
        dtype: element type; Python numbers and lists default to float32.
    """

    __array_priority__ = 1000  # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, backend=None, dtype=None):
        if isinstance(data, Tensor):
            ops = get_backend(backend) if backend is not None else data.backend
            data = data.data
        else:
            ops = _infer_backend(data, backend)
        if dtype is None and not ops.is_array(data) and not isinstance(data, np.ndarray) and not _is_torch(data):
            arr = np.asarray(data)
            dtype = _DEFAULT_DTYPE if arr.dtype.kind == "f" or arr.dtype == object else None
            data = arr
        self.data = ops.asarray(data, dtype=dtype)
        self.backend: Ops = ops
        self.grad = None
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and ops.dtype(self.data).kind != "f":
            raise TypeError(f"only float tensors can require grad, got {ops.dtype(self.data)}")
        self._node = None
        self.name: str | None = None

    @classmethod
    def _wrap(cls, data, ops: Ops, requires_grad: bool = False) -> "Tensor":
        t = cls.__new__(cls)
        t.data, t.backend, t.grad, t.requires_grad, t._ref, t.name = data, ops, None, requires_grad, None, None
        return t

    _ref: "TapeEntry | None" = None

    @property
    def _node(self):
        """``(Function, Context, inputs)`` that computed this tensor, or None for a leaf."""
        return self._ref._node if self._ref is not None else None

    @_node.setter
    def _node(self, node) -> None:
        if node is None:
            if self._ref is not None:
                self._ref._node = None
            return
        if self._ref is None:
            self._ref = TapeEntry(self.shape)
        self._ref._node = node

    def _entry(self):
        """How the tape refers to this tensor: its :class:`TapeEntry` if it was computed, else itself."""
        return self._ref if self._ref is not None else self

    # ------------------------------------------------------------ description
    @property
    def shape(self) -> tuple[int, ...]:
        """The shape as a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.data.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.data.shape))

    @property
    def dtype(self) -> np.dtype:
        """Element type, as a NumPy dtype on every backend."""
        return self.backend.dtype(self.data)

    @property
    def device(self) -> str:
        """The device the data lives on (``cpu`` or ``cuda:N``)."""
        return self.backend.device

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded operation."""
        return self._node is None

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied off the GPU if needed)."""
        return self.backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(-1)[0].item()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.numpy(), precision=4, threshold=20)}, backend={self.backend.name}{grad})"

    # ------------------------------------------------------------- autograd
    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = flag
        return self

    def detach(self) -> "Tensor":
        """The same data, cut off from the tape."""
        return Tensor._wrap(self.data, self.backend)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        Args:
            grad: the gradient flowing into ``self``; defaults to 1 for a one-element tensor.
            retain_graph: keep saved arrays so ``backward`` can run again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        ops = self.backend
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, got {self.shape}")
            grad = ops.ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        else:
            grad = ops.asarray(grad, dtype=self.dtype)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"gradient shape {tuple(grad.shape)} does not match tensor shape {self.shape}")

        order = _topological_order(self)
        ready = _GRAD_READY.get()
        grads: dict[int, Any] = {id(self._entry()): grad}
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._node is None:
                if t.requires_grad:
                    t.grad = g if t.grad is None else t.grad + g
                    if ready is not None:  # reversed topological order: no later use of t
                        ready(t)
                continue
            fn, ctx, inputs = t._node
            in_grads = fn.backward(ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for inp, ig in zip(inputs, in_grads):
                if ig is None or not isinstance(inp, (Tensor, TapeEntry)) or not inp.requires_grad:
                    continue
                if tuple(ig.shape) != inp.shape:
                    raise RuntimeError(
                        f"{fn.__name__}.backward returned a gradient of shape {tuple(ig.shape)} "
                        f"for an input of shape {inp.shape}"
                    )
                prev = grads.get(id(inp))
                grads[id(inp)] = ig if prev is None else prev + ig
            if not retain_graph:
                t._node = None  # free the saved arrays; this tensor becomes a leaf

    # ------------------------------------------------------------- operators
    def __add__(self, other):
        return _F().add(self, other)

    def __radd__(self, other):
        return _F().add(other, self)

    def __sub__(self, other):
        return _F().sub(self, other)

    def __rsub__(self, other):
        return _F().sub(other, self)

    def __mul__(self, other):
        return _F().mul(self, other)

    def __rmul__(self, other):
        return _F().mul(other, self)

    def __truediv__(self, other):
        return _F().div(self, other)

    def __rtruediv__(self, other):
        return _F().div(other, self)

    def __neg__(self):
        return _F().neg(self)

    def __pow__(self, exponent):
        return _F().pow(self, exponent)

    def __matmul__(self, other):
        return _F().matmul(self, other)

    def __rmatmul__(self, other):
        return _F().matmul(other, self)

    def __getitem__(self, index):
        return _F().getitem(self, index)

    # Comparisons give plain (non-differentiable) boolean tensors.
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other), self.backend)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    __hash__ = object.__hash__

    # ------------------------------------------------------------- methods
    def reshape(self, *shape):
        """A tensor with the same data and a new shape (one entry may be -1)."""
        return _F().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    view = reshape

    def transpose(self, dim0: int = -2, dim1: int = -1):
        """Swap two dimensions."""
        return _F().transpose(self, dim0, dim1)

    def permute(self, *dims):
        """Reorder dimensions."""
        return _F().permute(self, dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)

    @property
    def T(self):
        """Reverse all dimensions."""
        return _F().permute(self, tuple(reversed(range(self.ndim))))

    def sum(self, axis=None, keepdims: bool = False):
        """Sum over ``axis``."""
        return _F().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        """Mean over ``axis``."""
        return _F().mean(self, axis, keepdims)

    def max(self, axis=None, keepdims: bool = False):
        """Maximum over ``axis`` (ties share the gradient)."""
        return _F().max(self, axis, keepdims)

    def exp(self):
        """Elementwise exp."""
        return _F().exp(self)

    def log(self):
        """Elementwise natural log."""
        return _F().log(self)

    def tanh(self):
        """Elementwise tanh."""
        return _F().tanh(self)

    def sigmoid(self):
        """Elementwise logistic sigmoid."""
        return _F().sigmoid(self)

    def relu(self):
        """Elementwise max(x, 0)."""
        return _F().relu(self)

    def sqrt(self):
        """Elementwise square root."""
        return _F().sqrt(self)

    def gelu(self):
        """BERT's exact GELU."""
        return _F().gelu(self)

    def softmax(self, axis: int = -1, mask=None):
        """Softmax along ``axis``; entries where ``mask`` is False get probability 0."""
        return _F().softmax(self, axis=axis, mask=mask)

    def log_softmax(self, axis: int = -1, mask=None):
        """Log-softmax along ``axis``; masked entries are -inf."""
        return _F().log_softmax(self, axis=axis, mask=mask)

    def astype(self, dtype):
        """A copy converted to ``dtype`` (differentiable between float types)."""
        return _F().cast(self, dtype)

    def to(self, backend=None, device: str | None = None, dtype=None) -> "Tensor":
        """This tensor's data on another backend/device (a new leaf)."""
        ops = target_backend(self.backend, backend, device)
        data = self.data if ops is self.backend else ops.asarray(self.backend.to_numpy(self.data))
        if dtype is not None:
            data = ops.cast(data, dtype)
        return Tensor._wrap(data, ops, requires_grad=self.requires_grad)


def _F():
    from . import functions

    return functions


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _infer_backend(data, backend) -> Ops:
    if backend is not None:
        return get_backend(backend)
    if _is_torch(data):
        dev = str(data.device)
        return get_backend("torch", "cpu" if dev == "cpu" else dev)
    return get_backend(None)


def _topological_order(root: Tensor) -> list:
    """Tape entries reachable from ``root`` through recorded operations, inputs before outputs.

    An entry is a leaf :class:`Tensor` or a computed tensor's :class:`TapeEntry`; both have
    ``_node`` (None for a leaf), ``requires_grad`` and ``shape``. Only entries that require grad
    are followed; each appears once, ``root``'s entry last.
    """
    # BEGIN TASK 0.1
    order: list = []
    visited: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root._entry(), False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._node is not None:
            for inp in t._node[2]:
                if isinstance(inp, (Tensor, TapeEntry)) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order
    # END TASK 0.1


def tensor(data, requires_grad: bool = False, backend=None, dtype=None) -> Tensor:
    """Make a :class:`Tensor` (see its arguments)."""
    return Tensor(data, requires_grad=requires_grad, backend=backend, dtype=dtype)
