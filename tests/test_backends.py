"""Backend consistency: same interface everywhere, Numba kernels equal the NumPy reference,
the vectorisable exp/erf are accurate, and backend selection works."""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import minidistill as md
from minidistill.backends import Ops, get_backend
from minidistill.backends._fastmath import ERFC_COEFFS, ERFC_DEGREE, fit_erfc_chebyshev

from .conftest import ALL_BACKENDS, rand


def _public_methods(cls):
    return {n for n, v in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_every_backend_implements_the_interface_with_the_same_signatures(name):
    ops = get_backend(name)
    for method in _public_methods(Ops):
        impl = getattr(type(ops), method)
        defaults = {"sum_to_shape", "linear_forward", "adamw_update",  # written once in Ops over other methods
                    "lstm_forward", "lstm_backward", "phm_forward", "phm_backward", "native_low_precision"}
        if not ops.fused_attention:  # optional: only backends with a fused kernel say they have one
            defaults |= {"attention_forward", "attention_backward"}
        assert impl is not getattr(Ops, method) or method in defaults, f"{name} lacks {method}"
        assert inspect.signature(impl) == inspect.signature(getattr(Ops, method)), f"{name}.{method} signature differs"


# -------------------------------------------------------- Numba vs NumPy reference
@pytest.fixture(scope="module")
def pair():
    return get_backend("numpy"), get_backend("numba")


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_numba_kernels_match_numpy_reference(pair, dtype, tol):
    ref, nb = pair
    x = rand((3, 5, 17), 1, 3.0, dtype)
    g = rand((3, 5, 17), 2, 1.0, dtype)
    np.testing.assert_allclose(nb.gelu_forward(x), ref.gelu_forward(x), atol=tol, rtol=tol)
    np.testing.assert_allclose(nb.gelu_backward(x, g), ref.gelu_backward(x, g), atol=tol, rtol=tol)

    key_padding = np.ones((3, 1, 17), dtype=bool)
    key_padding[1, :, 10:] = False
    key_padding[2] = False  # a fully masked row gives zeros
    general = rand((3, 5, 17), 3) > 0
    for mask in (None, key_padding, general):
        y = nb.softmax_forward(x, mask)
        np.testing.assert_allclose(y, ref.softmax_forward(x, mask), atol=tol, rtol=tol)
        np.testing.assert_allclose(nb.softmax_backward(y, g), ref.softmax_backward(y, g), atol=tol, rtol=tol)
        ly = nb.log_softmax_forward(x, mask)
        np.testing.assert_allclose(ly, ref.log_softmax_forward(x, mask), atol=tol, rtol=tol)
        np.testing.assert_allclose(nb.log_softmax_backward(ly, g), ref.log_softmax_backward(ly, g), atol=tol, rtol=tol)
    assert np.all(nb.softmax_forward(x, key_padding)[2] == 0)

    w, b = rand((17,), 4, 1.0, dtype), rand((17,), 5, 1.0, dtype)
    y1, m1, r1 = nb.layer_norm_forward(x + 100.0, w, b, 1e-12)  # shifted: one-pass variance stays exact
    y0, m0, r0 = ref.layer_norm_forward(x + 100.0, w, b, 1e-12)
    np.testing.assert_allclose(y1, y0, atol=20 * tol, rtol=20 * tol)
    for a, c in zip(nb.layer_norm_backward(g, x, w, *nb.layer_norm_forward(x, w, b, 1e-5)[1:]),
                    ref.layer_norm_backward(g, x, w, *ref.layer_norm_forward(x, w, b, 1e-5)[1:])):
        np.testing.assert_allclose(a, c, atol=10 * tol, rtol=10 * tol)

    ids = np.array([[0, 3, 3], [9, 3, 1]])
    gg = rand((2, 3, 4), 6, 1.0, dtype)
    np.testing.assert_allclose(nb.embedding_backward(ids, gg, 10), ref.embedding_backward(ids, gg, 10), atol=tol)

    y = rand((6, 17), 7, 1.0, dtype)
    r = rand((6, 17), 8, 1.0, dtype)
    for bias, res in ((w, r), (w, None), (None, r)):
        np.testing.assert_allclose(nb.bias_add(y.copy(), bias, res), ref.bias_add(y.copy(), bias, res), atol=tol)


def test_teaching_matmul_kernel_equals_blas():
    from minidistill.backends.numba_ops import matmul

    a, b = rand((13, 7), 1), rand((7, 9), 2)
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="do not fit"):
        matmul(a, a)


def test_fast_exp_and_erf_are_accurate():
    from numba import njit

    from minidistill.backends._fastmath import fast_erf, fast_exp

    @njit
    def both(x, e, f):
        for i in range(x.size):
            e[i] = fast_exp(min(x[i], 1.0))
            f[i] = fast_erf(x[i])

    x = np.concatenate([np.linspace(-150, 1, 100_001), np.linspace(-8, 8, 100_001)])
    e, f = np.empty_like(x), np.empty_like(x)
    both(x, e, f)
    exact_e = np.exp(np.minimum(x, 1.0))
    exact_f = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(e - exact_e) / exact_e) < 1e-12  # the issue asks for < 1e-6
    assert np.max(np.abs(f - exact_f)) < 1e-13


def test_float32_exp_and_erf_are_accurate_to_float32_rounding():
    from numba import njit

    from minidistill.backends._fastmath import fast_erf32, fast_exp32

    @njit
    def both(x, e, f):
        for i in range(x.size):
            e[i] = fast_exp32(x[i])
            f[i] = fast_erf32(x[i])

    x = np.concatenate([np.linspace(-87, 88, 200_001), np.linspace(-8, 8, 200_001)]).astype(np.float32)
    e, f = np.empty_like(x), np.empty_like(x)
    both(x, e, f)
    exact_e = np.exp(x.astype(np.float64))
    exact_f = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(e - exact_e) / exact_e) < 1e-6
    assert np.max(np.abs(f - exact_f)) < 1e-6


def test_erfc_coefficients_are_reproducible_from_their_fit():
    from minidistill.backends._fastmath import ERF32_COEFFS, ERF32_DEGREE, ERF32_T0

    fresh = fit_erfc_chebyshev(ERFC_DEGREE)
    np.testing.assert_allclose(np.array(ERFC_COEFFS), fresh, rtol=0, atol=1e-12)
    fresh32 = fit_erfc_chebyshev(ERF32_DEGREE, ERF32_T0)
    np.testing.assert_allclose(np.array(ERF32_COEFFS), fresh32.astype(np.float32), rtol=0, atol=1e-9)


# --------------------------------------------------------------------- selection
def test_use_backend_nests_and_restores():
    outer = md.current_backend()
    with md.use_backend("numpy") as a:
        assert md.Tensor([1.0]).backend is a
        with md.use_backend("numba") as b:
            assert md.Tensor([1.0]).backend is b
        assert md.current_backend() is a
    assert md.current_backend() is outer


def test_environment_selects_the_process_backend():
    code = "import minidistill as md; print(md.current_backend().name)"
    env = {**os.environ, "MINIDISTILL_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


def test_unknown_backend_and_device_errors():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        get_backend("jax")
    with pytest.raises(ValueError, match="CPU only"):
        get_backend("numba", device="cuda")


def test_explicit_backend_argument_and_to():
    t = md.Tensor(np.arange(3.0), backend="numpy")
    assert t.backend.name == "numpy"
    u = t.to("numba")
    assert u.backend.name == "numba" and np.array_equal(u.numpy(), t.numpy())
