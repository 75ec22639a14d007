"""The LSTM: fused Numba kernels and the reference composition against torch.nn.LSTM with the
same weights (outputs and every gradient, padded batches via packed sequences), and a float64
finite-difference gradcheck of one direction on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.nn import functional as F
from minidistill.nn import LSTM

from .conftest import ALL_BACKENDS, rand

torch = pytest.importorskip("torch")


def _grad(t):
    g = t.grad
    return g.numpy() if isinstance(g, md.Tensor) else np.asarray(g.cpu() if hasattr(g, "cpu") else g)


def _torch_lstm(m: LSTM):
    ref = torch.nn.LSTM(m.input_size, m.hidden_size, num_layers=m.num_layers, bidirectional=m.bidirectional,
                        batch_first=True).double()
    ref.load_state_dict({k: torch.tensor(np.asarray(m.state_dict()[k].cpu() if hasattr(m.state_dict()[k], "cpu")
                                                    else m.state_dict()[k])) for k in m.state_dict()})
    return ref


@pytest.mark.torch
@pytest.mark.parametrize("backend_name", ALL_BACKENDS)
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)])
def test_lstm_matches_torch_with_padding(backend_name, bidirectional, layers):
    md.manual_seed(3)
    b, t, d, h = 4, 7, 5, 6
    m = LSTM(d, h, num_layers=layers, bidirectional=bidirectional).to(backend_name, dtype="float64")
    ref = _torch_lstm(m)
    x = rand((b, t, d), seed=1)
    lengths = [7, 4, 1, 6]
    mask = np.arange(t)[None, :] < np.array(lengths)[:, None]  # (B, T)
    g = rand((b, t, h * (2 if bidirectional else 1)), seed=2)

    xt = md.tensor(x, requires_grad=True, backend=backend_name)
    y = m(xt, mask)
    F.sum(y * md.tensor(g, backend=backend_name)).backward()

    xr = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xr, lengths, batch_first=True, enforce_sorted=False)
    out, _ = ref(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
    (out * torch.tensor(g)).sum().backward()

    np.testing.assert_allclose(y.numpy(), out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(_grad(xt), xr.grad.numpy(), atol=1e-12)
    ref_params = dict(ref.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(_grad(p), ref_params[name].grad.numpy(), atol=1e-12, err_msg=name)


@pytest.mark.torch
def test_lstm_unpadded_float32_numba_matches_torch():
    md.manual_seed(4)
    m = LSTM(16, 32, bidirectional=True).to("numba")
    ref = _torch_lstm(m).float()
    x = rand((8, 20, 16), seed=5, dtype="float32")
    y = m(md.tensor(x, backend="numba"))
    out, _ = ref(torch.tensor(x))
    np.testing.assert_allclose(y.numpy(), out.detach().numpy(), atol=2e-6)


@pytest.mark.parametrize("backend_name", ALL_BACKENDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_gradcheck(backend_name, reverse):
    b, t, d, h = 2, 4, 3, 2
    args = [md.tensor(rand(s, seed=i, scale=0.7), requires_grad=True, backend=backend_name)
            for i, s in enumerate([(b, t, d), (4 * h, d), (4 * h, h), (4 * h,), (4 * h,)])]
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    assert md.gradcheck(lambda *a: F.lstm(*a, mask=mask, reverse=reverse), *args)


def test_lstm_padded_steps_change_nothing(cpu_backend):
    """Appending padding to a sequence leaves its outputs and gradients unchanged."""
    md.manual_seed(5)
    m = LSTM(3, 4, bidirectional=True).to(cpu_backend.name, dtype="float64")
    x = rand((1, 3, 3), seed=6)
    x_pad = np.concatenate([x, rand((1, 2, 3), seed=7)], axis=1)
    y1 = m(md.tensor(x))
    y2 = m(md.tensor(x_pad), np.array([[1, 1, 1, 0, 0]]))
    np.testing.assert_allclose(y2.numpy()[:, :3], y1.numpy(), atol=1e-14)
    assert np.all(y2.numpy()[:, 3:] == 0.0)


def test_lstm_shape_errors():
    m = LSTM(3, 4)
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        m(md.tensor(np.zeros((2, 5, 4))))
    with pytest.raises(ValueError, match="do not fit W_hh"):
        F.lstm(md.tensor(np.zeros((1, 2, 3))), md.tensor(np.zeros((8, 3))), md.tensor(np.zeros((12, 3))))
