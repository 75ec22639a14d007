"""CompAct: compressed activations for the weight gradient (compress/compressed_activations.py)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import minidistill as md
from minidistill.compress.compressed_activations import (CompActConfig, callbacks, compact_linear, disable_compact,
                                                         enable_compact, saved_activation_bytes)
from minidistill.core import functions as F
from minidistill.models import BertConfig, BertForSequenceClassification
from minidistill.nn.layers import Linear
from minidistill.train import AdamW, SGD

from .conftest import ALL_BACKENDS, IDS, MASK, rand, randomise, tiny_bert, toy_data, toy_teacher

TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=24, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _model(dtype="float64"):
    md.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**TINY)).to(dtype=dtype)


def _batch(b=4, t=12):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 60, (b, t))
    mask = np.ones((b, t), dtype=np.int64)
    mask[1, 8:] = 0
    return ids, mask, np.arange(b) % 2


def _grads(model):
    ids, mask, labels = _batch()
    model.zero_grad()
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    # (full-shape gradient, gradient in the compressed basis): one of the two is None
    out = {}
    for n, p in model.named_parameters():
        g = None if p.grad is None else p.backend.to_numpy(p.grad).copy()
        out[n] = (None, g) if getattr(p, "grad_basis", None) is not None else (g, None)
    return out


def test_config_is_validated():
    for bad in (dict(rank=0), dict(variant="x"), dict(projection="sparse"), dict(update_proj_gap=0), dict(scale=0)):
        with pytest.raises(ValueError, match="compact"):
            CompActConfig(**bad)
    with pytest.raises(ValueError, match="rnk"):
        callbacks({"rnk": 4})


@pytest.mark.parametrize("backend_name", ALL_BACKENDS)
@pytest.mark.parametrize("variant", ["unbiased", "compressed"])
def test_full_rank_orthogonal_projection_gives_exact_gradients(backend_name, variant):
    with md.use_backend(backend_name):
        model = _model()
        exact = _grads(model)
        state = enable_compact(model, CompActConfig(rank=64, variant=variant, projection="orthogonal"))
        got = _grads(model)
    assert len(state.layers) == 12  # q, k, v, intermediate, output × 2 layers, pooler, classifier
    names = {n for n, _ in state.layers}
    assert not any(n.endswith("attention.output.dense") for n in names)
    for n, (g, cg) in got.items():
        layer = n[: -len(".weight")]
        if variant == "compressed" and n.endswith(".weight") and layer in names:
            assert g is None and cg is not None  # the gradient lives in the r-space
            p = dict(model.named_parameters())[n]
            pm = p.backend.to_numpy(p.grad_basis.matrix(p.backend, p.dtype))
            g = cg @ pm.T  # mapped back: gᵀ x P Pᵀ
        np.testing.assert_allclose(g, exact[n][0], rtol=1e-9, atol=1e-12, err_msg=n)


def test_input_gradient_is_exact_at_any_rank():
    x = md.Tensor(rand((3, 5, 16)), requires_grad=True)
    lin = Linear(16, 8).to(dtype="float64")
    F.sum(F.tanh(lin(x))).backward()
    exact = x.grad.copy()
    x.grad = None
    enable_compact(lin, rank=2, variant="unbiased")
    F.sum(F.tanh(lin(x))).backward()
    np.testing.assert_allclose(x.grad, exact, rtol=1e-12)
    assert not np.allclose(lin.weight.grad, 0)


def test_unbiased_variant_is_unbiased_over_projections():
    # E[gᵀ x P Pᵀ] = gᵀ x when E[P Pᵀ] = I. Over K independent P the mean's error per entry has
    # standard deviation ≈ sqrt(Var/K); the test allows 5 estimated standard errors (fixed seeds).
    x, g = rand((32, 16), seed=1), rand((32, 6), seed=2)
    exact = g.T @ x  # (6, 16)
    draws = []
    for seed in range(400):
        lin = Linear(16, 6).to(dtype="float64")
        enable_compact(lin, rank=4, variant="unbiased", seed=seed)
        xt = md.Tensor(x)
        lin(xt).backward(g)
        draws.append(lin.weight.grad.copy())
    draws = np.stack(draws)
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12)
    assert np.abs(draws[0] - exact).max() > 0.1 * np.abs(exact).max()  # one draw alone is noisy


def test_projection_is_redrawn_every_gap_and_reproducible():
    lin = Linear(16, 4).to(dtype="float64")
    st = enable_compact(lin, rank=4, update_proj_gap=3)
    ops = lin.weight.backend
    p0 = lin.linear_fn.matrix(ops, "float64")
    st.step = 2
    np.testing.assert_array_equal(lin.linear_fn.matrix(ops, "float64"), p0)
    st.step = 3
    assert not np.allclose(lin.linear_fn.matrix(ops, "float64"), p0)
    st.step = 0
    np.testing.assert_array_equal(lin.linear_fn.matrix(ops, "float64"), p0)  # regenerated, never stored
    assert abs(p0.var() * 4 - 1.0) < 0.5  # N(0, 1/r)


def test_tape_memory_drops_as_predicted():
    model = _model("float32")
    ids, mask, labels = _batch(8, 16)
    params = list(model.parameters())
    plain = saved_activation_bytes(model(ids, attention_mask=mask, labels=labels).loss, params)
    st = enable_compact(model, rank=4)
    comp = saved_activation_bytes(model(ids, attention_mask=mask, labels=labels).loss, params)
    n = 8 * 16
    # Each compressed layer keeps N·r floats instead of its input; q, k, v shared one input before.
    before = plain["by_op"]["Linear"]
    after = comp["by_op"]["CompActLinear"] + comp["by_op"].get("Linear", 0)
    uncompressed = comp["by_op"].get("Linear", 0)  # attention output projections: N·H each
    assert uncompressed == 2 * n * 32 * 4
    encoder_inputs = 2 * (n * 32 + n * 64 + n * 32) * 4  # per layer: x for q/k/v, FFN in, FFN hidden
    assert before - uncompressed >= encoder_inputs  # (+ the pooler's and classifier's inputs)
    # compressed: N·r floats per layer (q, k, v each keep their own z), 2 encoder layers + pooler + classifier
    assert comp["by_op"]["CompActLinear"] == 2 * 5 * n * 4 * 4 + 2 * 8 * 4 * 4
    assert comp["total"] - plain["total"] == after - before
    assert st.saved_bytes_per_token()["ratio"] == pytest.approx(12 * 4 / (10 * 32 + 2 * 64))  # Σ r / Σ d_in


def test_peak_memory_of_a_training_step_drops():
    def peak(use):
        model = _model("float32")
        ids, mask, labels = _batch(16, 24)
        if use:
            enable_compact(model, rank=2)
        tracemalloc.start()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    with md.use_backend("numpy"):
        assert peak(True) < peak(False)


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_compressed_optimiser_step_maps_the_update_back(opt):
    lin = Linear(8, 3).to(dtype="float64")
    st = enable_compact(lin, rank=8, projection="orthogonal", scale=1.0)
    w0 = lin.weight.numpy().copy()
    x, g = rand((5, 8), seed=3), rand((5, 3), seed=4)
    lin(md.Tensor(x)).backward(g)
    assert lin.weight.grad.shape == (3, 8)  # (out, r): the gradient in P's coordinates
    ghat = lin.weight.grad.copy()
    pm = lin.linear_fn.matrix(lin.weight.backend, "float64")
    optim = AdamW([lin.weight], lr=0.1, weight_decay=0.0) if opt == "adamw" else SGD([lin.weight], lr=0.1)
    optim.step()
    if opt == "sgd":
        np.testing.assert_allclose(lin.weight.numpy(), w0 - 0.1 * (g.T @ x), rtol=1e-10)  # exact at full rank
    else:
        direction = ghat / (np.abs(ghat) + 1e-8)  # Adam's first step: ±1 per compressed entry
        np.testing.assert_allclose(lin.weight.numpy(), w0 - 0.1 * direction @ pm.T, rtol=1e-8)
    optim.zero_grad()
    assert lin.weight.grad is None
    st.advance()
    assert st.step == 1


@pytest.mark.parametrize("variant", ["compressed", "unbiased"])
def test_training_with_compact_in_the_trainer_learns_and_cleans_up(minilm_path, variant):
    from minidistill.data import TextDataset, Tokenizer
    from minidistill.data.datasets import TaskSpec
    from minidistill.train import Trainer, TrainConfig

    
    tok = Tokenizer.from_pretrained(minilm_path)
    data = toy_data()
    assert isinstance(data, TextDataset) and isinstance(data.task, TaskSpec)
    model = tiny_bert(0)
    cfg = TrainConfig(lr=3e-3, batch_size=32, max_steps=60, warmup_ratio=0.0, schedule="constant", max_length=16,
                      progress=False, weight_decay=0.0)
    compact = callbacks({"rank": 8, "update_proj_gap": 20, "variant": variant, "scale": 1.0})
    Trainer(model, tok, data, None, cfg, callbacks=compact).train()
    assert getattr(model, "compact_state", None) is None  # undone after training
    assert all(getattr(p, "grad_basis", None) is None for p in model.parameters())
    assert all(getattr(m, "linear_fn", None) is None for m in model.modules())
    assert md.train.evaluate(model, tok, data, max_length=16)["accuracy"] == 1.0


def test_enable_twice_and_nothing_to_compress_are_errors():
    lin = Linear(4, 4)
    enable_compact(lin, rank=2)
    with pytest.raises(ValueError, match="already enabled"):
        enable_compact(lin, rank=2)
    disable_compact(lin)
    assert lin.linear_fn is None
    with pytest.raises(ValueError, match="no Linear"):
        enable_compact(md.nn.LayerNorm(4) if hasattr(md, "nn") else lin, rank=2)


def test_compact_linear_on_a_computed_weight_is_unbiased_path():
    lin = Linear(6, 3).to(dtype="float64")
    enable_compact(lin, rank=6, projection="orthogonal")
    x = md.Tensor(rand((4, 6)))
    w = lin.weight * 1.0  # a computed weight (as WID's R W C): no compressed optimiser state
    y = compact_linear(x, w, lin.bias, None, lin.linear_fn)
    y.backward(np.ones((4, 3)))
    np.testing.assert_allclose(lin.weight.grad, np.ones((3, 4)) @ x.numpy(), rtol=1e-10)
    assert lin.weight.grad.shape == lin.weight.shape  # an ordinary gradient, no compressed state


@pytest.mark.parametrize("method", ["wid", "theseus", "distill"])
def test_every_method_trains_through_compact_with_exact_full_rank_gradients(method):
    """WID (computed weights R W C: the unbiased path), Theseus (a gated mix of two models) and a
    distillation loss: with a full-rank orthogonal P the gradients equal the plain ones."""
    from minidistill.compress import LayerMap, SoftKD, HiddenMSE, WIDConfig, WIDModel
    from minidistill.compress.theseus import TheseusModel


    teacher = toy_teacher()
    labels = np.arange(IDS.shape[0]) % 3
    if method == "wid":
        model = WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
        randomise(model)

        def loss_fn():
            return model(IDS, MASK, labels=labels).loss
    elif method == "theseus":
        model = TheseusModel(teacher, num_layers=1, seed=3)
        model.p = 0.5

        def loss_fn():
            model.rng = np.random.default_rng(0)  # the same gates in both passes
            return model(IDS, MASK, labels=labels).loss
    else:
        md.manual_seed(1)
        model = toy_teacher(seed=1)
        objs = [SoftKD(temperature=2.0), HiddenMSE(LayerMap.build("uniform", 2, 2), 16, 16)]
        t_out = teacher(IDS, MASK, output_hidden_states=True)

        def loss_fn():
            s_out = model(IDS, MASK, output_hidden_states=True)
            return objs[0](s_out, t_out) + objs[1](s_out, t_out, {"attention_mask": MASK})
    model.train()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    loss_fn().backward()
    exact = {n: p.grad.copy() for n, p in trainable if p.grad is not None}
    model.zero_grad()
    state = enable_compact(model, rank=64, variant="unbiased", projection="orthogonal")
    assert state.layers
    loss_fn().backward()
    for n, p in trainable:
        if n in exact:
            np.testing.assert_allclose(p.grad, exact[n], rtol=1e-8, atol=1e-12, err_msg=n)
