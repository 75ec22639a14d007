"""The backend interface: every array operation the core needs, in one class.

A backend is an object with the methods below, working on its own array type
(``numpy.ndarray`` for the NumPy and Numba backends, ``torch.Tensor`` for Torch).
The core's autograd functions (``minidistill.core.functions``) call only these methods
and the arithmetic operators (``+ - * / @ **``) that every array type has, so one
definition of each layer runs on every backend.

Adding a backend means subclassing :class:`Ops` (or an existing backend, overriding only
its hot paths, as the Numba backend does) and registering it with
:func:`minidistill.backends.register_backend`. ``tests/test_backends.py`` checks that
every registered backend implements every method with the same signature.
"""

from __future__ import annotations


class Ops:
    """Abstract backend. Subclasses implement every method; the NumPy one is the reference."""

    name: str = "abstract"
    device: str = "cpu"

    # ------------------------------------------------------------------ arrays
    def is_array(self, x) -> bool:
        """True if ``x`` is this backend's array type."""
        raise NotImplementedError

    def asarray(self, x, dtype=None):
        """Convert ``x`` (list, scalar, NumPy array, own array) to this backend's array."""
        raise NotImplementedError

    def to_numpy(self, a):
        """Return ``a`` as a NumPy array (a copy when it lives elsewhere)."""
        raise NotImplementedError

    def dtype(self, a):
        """The NumPy dtype that describes ``a``'s element type."""
        raise NotImplementedError

    def cast(self, a, dtype):
        """``a`` converted to the NumPy-named ``dtype`` (no copy if already of that type)."""
        raise NotImplementedError

    def zeros(self, shape, dtype):
        """A zero-filled array of ``shape`` and NumPy-named ``dtype``."""
        raise NotImplementedError

    def zeros_like(self, a):
        """Zeros with ``a``'s shape and type."""
        raise NotImplementedError

    def ones_like(self, a):
        """Ones with ``a``'s shape and type."""
        raise NotImplementedError

    def arange(self, n, dtype="int64"):
        """``0, 1, …, n-1``."""
        raise NotImplementedError

    def copy(self, a):
        """A contiguous copy of ``a``."""
        raise NotImplementedError

    # -------------------------------------------------------------- randomness
    def seed(self, seed: int) -> None:
        """Reseed this backend's random generator."""
        raise NotImplementedError

    def get_rng_state(self):
        """The generator's state as a JSON-able object (for training checkpoints)."""
        raise NotImplementedError

    def set_rng_state(self, state) -> None:
        """Restore a state returned by :meth:`get_rng_state`."""
        raise NotImplementedError

    def rand(self, shape, dtype):
        """Uniform samples in [0, 1)."""
        raise NotImplementedError

    def randn(self, shape, dtype):
        """Standard normal samples."""
        raise NotImplementedError

    # ---------------------------------------------------------- elementwise math
    def exp(self, a):
        """Elementwise exponential."""
        raise NotImplementedError

    def log(self, a):
        """Elementwise natural logarithm."""
        raise NotImplementedError

    def tanh(self, a):
        """Elementwise hyperbolic tangent."""
        raise NotImplementedError

    def sqrt(self, a):
        """Elementwise square root."""
        raise NotImplementedError

    def maximum(self, a, b):
        """Elementwise maximum of ``a`` and ``b`` (broadcasting)."""
        raise NotImplementedError

    def where(self, cond, a, b):
        """``a`` where ``cond`` else ``b`` (broadcasting)."""
        raise NotImplementedError

    # --------------------------------------------------------------- reductions
    def sum(self, a, axis=None, keepdims=False):
        """Sum over ``axis`` (int, tuple or None for all)."""
        raise NotImplementedError

    def max(self, a, axis=None, keepdims=False):
        """Maximum over ``axis`` (int, tuple or None for all)."""
        raise NotImplementedError

    def argmax(self, a, axis=-1):
        """Index of the maximum along ``axis``."""
        raise NotImplementedError

    # ------------------------------------------------------------------- shapes
    def reshape(self, a, shape):
        """``a`` with a new shape (a view where possible)."""
        raise NotImplementedError

    def transpose(self, a, axes):
        """``a`` with its axes permuted to ``axes`` (a view)."""
        raise NotImplementedError

    def concat(self, arrays, axis=0):
        """Join ``arrays`` along ``axis``."""
        raise NotImplementedError

    def broadcast_to(self, a, shape):
        """``a`` broadcast to ``shape`` (read-only view)."""
        raise NotImplementedError

    def getitem_backward(self, g, index, shape):
        """Gradient of ``a[index]``: zeros of ``shape`` with ``g`` added at ``index``.

        Repeated indices (advanced indexing) accumulate.
        """
        raise NotImplementedError

    def sum_to_shape(self, g, shape):
        """Sum ``g`` over the axes that broadcasting expanded, so that it has ``shape``."""
        shape = tuple(shape)
        if tuple(g.shape) == shape:
            return g
        lead = len(g.shape) - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1
        )
        if axes:
            g = self.sum(g, axes, keepdims=True)
        return self.reshape(g, shape)

    # ------------------------------------------------------------- linear algebra
    def matmul(self, a, b):
        """Batched, broadcasting matrix product ``a @ b``."""
        raise NotImplementedError

    # ------------------------------------------------------------ fused hot paths
    def linear_forward(self, x2, weight, bias=None, residual=None):
        """``x2 @ weightᵀ + bias + residual`` for x2 (N, in), weight (out, in).

        The default is a matmul and the :meth:`bias_add` epilogue; a backend whose GEMM can
        add the bias itself (torch's ``addmm``) overrides it.
        """
        return self.bias_add(self.matmul(x2, self.transpose(weight, (1, 0))), bias, residual)

    def adamw_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """One AdamW step, in place on ``param``, ``m`` and ``v`` (see ``train/optim.py``).

        ``step`` is the 1-based step count used for the bias corrections. The default is the
        plain composition; backends override it with a fused pass.
        """
        c1, c2 = 1.0 - beta1**step, 1.0 - beta2**step
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        if weight_decay:
            param *= 1.0 - lr * weight_decay
        denom = self.sqrt(v) * (1.0 / c2**0.5) + eps
        param -= (lr / c1) * m / denom

    def bias_add(self, y, bias=None, residual=None):
        """Linear epilogue: ``y + bias + residual`` (``y`` is fresh and may be overwritten).

        ``y``: (N, D); ``bias``: (D,) or None; ``residual``: (N, D) or None.
        """
        raise NotImplementedError

    def gelu_forward(self, x):
        """BERT's exact GELU, ``0.5 x (1 + erf(x / √2))``."""
        raise NotImplementedError

    def gelu_backward(self, x, g):
        """``g · GELU'(x)`` with ``GELU'(x) = Φ(x) + x φ(x)``."""
        raise NotImplementedError

    def softmax_forward(self, x, mask=None, scale=1.0):
        """Softmax of ``scale · x`` over the last axis; ``mask`` (bool, broadcastable,
        True = keep) zeroes entries. A row whose entries are all masked gives zeros (never NaN).

        The scale lets attention apply 1/√d inside the kernel instead of in a separate pass.
        """
        raise NotImplementedError

    def softmax_backward(self, y, g, scale=1.0):
        """Input gradient of softmax(scale · x) from its output ``y``: ``scale · y (g - Σ g y)``."""
        raise NotImplementedError

    def log_softmax_forward(self, x, mask=None):
        """Log-softmax over the last axis; masked entries are ``-inf``."""
        raise NotImplementedError

    def log_softmax_backward(self, y, g):
        """Input gradient of log-softmax from its output ``y``: ``g - exp(y) Σ g``.

        Entries where ``y`` is ``-inf`` (masked) get gradient 0.
        """
        raise NotImplementedError

    def layer_norm_forward(self, x, weight, bias, eps):
        """LayerNorm over the last axis. Returns ``(y, mean, rstd)``; mean and rstd are (N,)
        for ``x`` viewed as (N, D)."""
        raise NotImplementedError

    def layer_norm_backward(self, g, x, weight, mean, rstd):
        """Gradients ``(dx, dweight, dbias)`` of LayerNorm given the saved statistics."""
        raise NotImplementedError

    def embedding_backward(self, ids, g, num_embeddings):
        """Scatter-add ``g`` (…, D) into a (num_embeddings, D) table at rows ``ids`` (…)."""
        raise NotImplementedError
