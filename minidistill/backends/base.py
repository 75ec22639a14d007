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
    #: the dtypes ``autocast`` may run matrix products in on this backend (NumPy has no bfloat16
    #: and no fast float16 GEMM, so only torch lists any)
    low_precision: tuple = ()
    def native_low_precision(self, dtype: str) -> bool:
        """Whether the device has hardware for ``dtype`` matrix products (False: none, or emulated)."""
        return False

    #: whether :meth:`attention_forward` exists (a fused kernel that never stores the (T, T) maps)
    fused_attention: bool = False

    def attention_forward(self, q, k, v, mask, scale: float, dropout_p: float, grad: bool):
        """Fused ``softmax(q kᵀ · scale + mask) v`` for (B, H, T, d) q, k, v without materialised
        probabilities; returns ``(out (B, H, T, d), state)``, where ``state`` is what
        :meth:`attention_backward` needs (None when ``grad`` is False). Only backends with
        ``fused_attention`` implement it."""
        raise NotImplementedError(f"the {self.name} backend has no fused attention")

    def attention_backward(self, state, g, needs: tuple):
        """Gradients ``(dq, dk, dv)`` (None where ``needs`` is False) of the fused attention."""
        raise NotImplementedError(f"the {self.name} backend has no fused attention")

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
        # BEGIN TASK 0.2
        lead = len(g.shape) - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1
        )
        if axes:
            g = self.sum(g, axes, keepdims=True)
        return self.reshape(g, shape)
        # END TASK 0.2

    # ------------------------------------------------------------- linear algebra
    def matmul(self, a, b):
        """Batched, broadcasting matrix product ``a @ b``."""
        raise NotImplementedError

    # ------------------------------------------------------------------- int8
    def quantize_int8(self, x, scale):
        """``clip(round(x / scale), -127, 127)`` as int8: symmetric 8-bit quantization.

        ``scale`` broadcasts against ``x`` ((N, 1) per row, (out, 1) per channel, a scalar per
        tensor). Rounding is half to even (NumPy's and torch's ``round``); -128 is never used,
        so the grid is symmetric and ``-q`` is always representable.
        """
        raise NotImplementedError

    def int8_matmul(self, a, b):
        """``a @ bᵀ`` for int8 ``a`` (M, K) and int8 ``b`` (N, K), exactly, as int32 (M, N).

        Every product is at most 127² and K · 127² < 2³¹ for K < 133,000, so int32
        accumulation cannot overflow at any width a BERT has.
        """
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

    # --------------------------------------------------- Kronecker (PHM) products
    def phm_forward(self, x2, rule, out_factor, in_factor):
        """``x2 Wᵀ`` for the PHM weight ``W = Σ_i rule[i] ⊗ (out_factor[i] in_factor[i]ᵀ)``
        (out, in), without building W.

        With the input row viewed as n blocks ``x_a`` of width p and the output as n blocks
        ``y_b`` of width q, ``(A ⊗ s tᵀ) x`` has blocks ``y_b = Σ_a A[b, a] s (tᵀ x_a)``: the
        vec identity ``(A ⊗ B) vec(X) = vec(B X Aᵀ)`` with a rank-one B. Three small products::

            u[r, a, i] = t_i · x_a                     (N, n, n)
            c[i, r, b] = Σ_a A_i[b, a] u[r, a, i]       (n, N, n)
            y[r, b, :] = Σ_i c[i, r, b] s_i             (N, n, q)

        O(n (in + out) + n³) per row instead of in · out.

        Args:
            x2: (N, in) rows, in = n p. rule: (n, n, n) the ``A_i``. out_factor: (n, q) the
                ``s_i``, out = n q. in_factor: (n, p) the ``t_i``. More generally m terms:
                rule (m, n, n), factors (m, q) and (m, p) (fast weights of rank r: m = n r).

        Returns:
            ``(y (N, out), saved)``; ``saved`` = (u, c) for :meth:`phm_backward`.
        """
        rows, n, p, q = x2.shape[0], rule.shape[1], in_factor.shape[1], out_factor.shape[1]
        u = self.reshape(self.matmul(self.reshape(x2, (rows * n, p)), self.transpose(in_factor, (1, 0))),
                         (rows, n, -1))  # (N, a, i)
        c = self.matmul(self.transpose(u, (2, 0, 1)), self.transpose(rule, (0, 2, 1)))  # (i, N, b)
        c_rows = self.reshape(self.transpose(c, (1, 2, 0)), (rows * n, -1))  # (N·b, i)
        y = self.matmul(c_rows, out_factor)  # (N·b, q)
        return self.reshape(y, (rows, n * q)), (u, c)

    def phm_backward(self, g2, x2, rule, out_factor, in_factor, saved):
        """Gradients ``(dx (N, in), drule (n, n, n), dout_factor (n, q), din_factor (n, p))``
        of :meth:`phm_forward` given the output gradient ``g2`` (N, out)."""
        u, c = saved
        rows, n, p, q = x2.shape[0], rule.shape[1], in_factor.shape[1], out_factor.shape[1]
        g_rows = self.reshape(g2, (rows * n, q))  # (N·b, q)
        dc_rows = self.matmul(g_rows, self.transpose(out_factor, (1, 0)))  # (N·b, i)
        c_rows = self.reshape(self.transpose(c, (1, 2, 0)), (rows * n, -1))  # (N·b, i)
        d_out = self.matmul(self.transpose(c_rows, (1, 0)), g_rows)  # (i, q)
        dc = self.transpose(self.reshape(dc_rows, (rows, n, -1)), (2, 0, 1))  # (i, N, b)
        d_rule = self.matmul(self.transpose(dc, (0, 2, 1)), self.transpose(u, (2, 0, 1)))  # (i, b, a)
        du = self.matmul(dc, rule)  # (i, N, a)
        du_rows = self.reshape(self.transpose(du, (1, 2, 0)), (rows * n, -1))  # (N·a, i)
        dx = self.reshape(self.matmul(du_rows, in_factor), (rows, n * p))  # (N, in)
        d_in = self.matmul(self.transpose(du_rows, (1, 0)), self.reshape(x2, (rows * n, p)))  # (i, p)
        return dx, d_rule, d_out, d_in

    # ------------------------------------------------------------- recurrences
    def lstm_forward(self, xg, w_hh, mask=None, reverse=False):
        """One direction of an LSTM over precomputed input gates (the reference composition).

        Args:
            xg: (B, T, 4H) input gates ``x W_ihᵀ + b_ih + b_hh``, in torch's order i, f, g, o.
            w_hh: (4H, H) recurrent weights.
            mask: (B, T) bool, True for real tokens, or None (all real). A padded step keeps
                the state unchanged and outputs zeros, which is what packed sequences do:
                a reverse pass over a right-padded row starts at its last real token.
            reverse: run ``t = T−1 … 0``.

        Returns:
            ``(out, saved)``: out (B, T, H) hidden states; ``saved`` = (gates (B, T, 4H) after
            their nonlinearities, c (B, T, H) new cells, h_prev and c_prev (B, T, H) the states
            each step started from), everything :meth:`lstm_backward` needs.
        """
        b, t_len, four_h = xg.shape
        hid = four_h // 4
        dt = self.dtype(xg)
        out, c_new = self.zeros((b, t_len, hid), dt), self.zeros((b, t_len, hid), dt)
        h_prev, c_prev = self.zeros((b, t_len, hid), dt), self.zeros((b, t_len, hid), dt)
        gates = self.zeros((b, t_len, four_h), dt)
        h, c = self.zeros((b, hid), dt), self.zeros((b, hid), dt)
        w_t = self.transpose(w_hh, (1, 0))  # (H, 4H)
        for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
            a = xg[:, t] + self.matmul(h, w_t)  # (B, 4H)
            i, f = _sigmoid(self, a[:, :hid]), _sigmoid(self, a[:, hid:2 * hid])
            g, o = self.tanh(a[:, 2 * hid:3 * hid]), _sigmoid(self, a[:, 3 * hid:])
            cn = f * c + i * g  # (B, H)
            hn = o * self.tanh(cn)  # (B, H)
            h_prev[:, t], c_prev[:, t], c_new[:, t] = h, c, cn
            gates[:, t] = self.concat([i, f, g, o], axis=-1)
            if mask is None:
                h, c = hn, cn
                out[:, t] = hn
            else:
                m = mask[:, t][:, None]  # (B, 1)
                h, c = self.where(m, hn, h), self.where(m, cn, c)
                out[:, t] = self.where(m, hn, 0.0 * hn)
        return out, (gates, c_new, h_prev, c_prev)

    def lstm_backward(self, g_out, w_hh, saved, mask=None, reverse=False):
        """Gradients ``(dxg (B, T, 4H), dw_hh (4H, H))`` of :meth:`lstm_forward` given the
        output gradient ``g_out`` (B, T, H) and its ``saved`` arrays (backpropagation through
        time: the steps in the opposite order, carrying dh and dc)."""
        gates, c_new, h_prev, c_prev = saved
        b, t_len, hid = g_out.shape
        dt = self.dtype(g_out)
        dxg = self.zeros((b, t_len, 4 * hid), dt)
        dh, dc = self.zeros((b, hid), dt), self.zeros((b, hid), dt)
        for t in (range(t_len) if reverse else range(t_len - 1, -1, -1)):
            i, f = gates[:, t, :hid], gates[:, t, hid:2 * hid]
            g, o = gates[:, t, 2 * hid:3 * hid], gates[:, t, 3 * hid:]
            tc = self.tanh(c_new[:, t])  # (B, H)
            dh_new = g_out[:, t] + dh
            dc_new = dc + dh_new * o * (1.0 - tc * tc)
            if mask is not None:  # padded steps pass dh and dc straight through
                m = mask[:, t][:, None]
                zero = 0.0 * dh
                keep_h, keep_c = self.where(m, zero, dh), self.where(m, zero, dc)
                dh_new, dc_new = self.where(m, dh_new, zero), self.where(m, dc_new, zero)
            da = self.concat([dc_new * g * i * (1.0 - i), dc_new * c_prev[:, t] * f * (1.0 - f),
                              dc_new * i * (1.0 - g * g), dh_new * tc * o * (1.0 - o)], axis=-1)  # (B, 4H)
            dxg[:, t] = da
            dh = self.matmul(da, w_hh)  # (B, H)
            dc = dc_new * f
            if mask is not None:
                dh, dc = dh + keep_h, dc + keep_c
        dw = self.matmul(self.transpose(self.reshape(dxg, (b * t_len, 4 * hid)), (1, 0)),
                         self.reshape(h_prev, (b * t_len, hid)))  # (4H, H): Σ_t da_tᵀ h_{t-1}
        return dxg, dw


def _sigmoid(ops, x):
    """``1 / (1 + e^(−x))`` as ``(1 + tanh(x/2)) / 2`` (no overflow)."""
    return 0.5 * (1.0 + ops.tanh(0.5 * x))
