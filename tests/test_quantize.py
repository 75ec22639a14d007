"""Int8 quantization: the kernels against integer references, the quantizer's error bound, the
int8 and fake-quantized layers against each other (exactly, in float64), the straight-through
estimator against its definition, whole models (post-training, QAT, fold, save and load), and
the real MiniLM-L6 in int8 against float."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidistill as md
from minidistill.compress.quantize import calibrate, prepare_qat, quantize
from minidistill.core.tensor import Tensor, no_grad
from minidistill.fileio import CheckpointError
from minidistill.models import BertForSequenceClassification, BertForTokenClassification
from minidistill.nn.quantized import (FakeQuantLinear, FakeQuantLinearFunction, Int8Embedding, Int8Linear,
                                      QuantizedLayout, describe, quantize_weight)

from .conftest import ALL_BACKENDS, IDS, MASK, SENTENCES, rand, randomise, toy_teacher

BATCH = {"input_ids": IDS, "attention_mask": MASK}


def _int8(shape, seed, extremes=False):
    rng = np.random.default_rng(seed)
    a = rng.integers(-127, 128, shape).astype(np.int8)
    if extremes and a.size:
        a[..., ::2] = 127
        a[..., 1::3] = -127
    return a


# ------------------------------------------------------------------- kernels
@pytest.mark.parametrize("name", ALL_BACKENDS)
@pytest.mark.parametrize("m,k,n", [(37, 2100, 19), (1, 1, 1), (64, 384, 1536), (5, 0, 3)])
def test_int8_matmul_is_the_integer_product(name, m, k, n):
    ops = md.get_backend(name)
    a, b = _int8((m, k), 0, extremes=True), _int8((n, k), 1)
    a[0] = 0  # a zero row
    want = a.astype(np.int64) @ b.astype(np.int64).T
    got = ops.to_numpy(ops.int8_matmul(ops.asarray(a), ops.asarray(b)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("gemm", ["kernel", "blas"])
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 1300), n=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_numba_int8_gemms_equal_the_reference_on_any_shape(gemm, m, k, n, seed):
    ops = md.get_backend("numba")
    a, b = _int8((m, k), seed, extremes=seed % 2 == 0), _int8((n, k), seed + 1, extremes=seed % 3 == 0)
    before, ops.int8_gemm = ops.int8_gemm, gemm
    try:
        got = ops.int8_matmul(a, b)
    finally:
        ops.int8_gemm = before
    np.testing.assert_array_equal(got, md.get_backend("numpy").int8_matmul(a, b))


@pytest.mark.parametrize("name", ALL_BACKENDS)
@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 40), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_quantize_dequantize_error_is_at_most_half_a_step_per_channel(name, rows, cols, scale, seed):
    ops = md.get_backend(name)
    w = rand((rows, cols), seed, scale)
    w[0] = 0.0  # a zero channel: scale 1, all zeros
    if rows > 1:
        w[1, 0] = 1e6 * scale  # one extreme value sets its channel's step
    q, s = quantize_weight(ops, ops.asarray(w))
    q, s = ops.to_numpy(q), ops.to_numpy(s)
    assert q.dtype == np.int8 and q.min() >= -127
    np.testing.assert_array_equal(q[0], 0)
    back = q.astype(np.float64) * s[:, None]
    assert np.all(np.abs(back - w) <= s[:, None] / 2 * (1 + 1e-12))
    np.testing.assert_array_equal(np.abs(q).max(axis=1)[1:], 127)  # every nonzero channel uses its whole grid


def test_quantize_int8_backends_agree_to_the_bit():
    x = rand((7, 33), 3, 5.0).astype(np.float32)
    s = (np.abs(x).max(1, keepdims=True) / 127).astype(np.float32)
    want = md.get_backend("numpy").quantize_int8(x, s)
    for name in ALL_BACKENDS:
        ops = md.get_backend(name)
        np.testing.assert_array_equal(ops.to_numpy(ops.quantize_int8(ops.asarray(x), ops.asarray(s))), want)


# ------------------------------------------------------------------- layers
@pytest.mark.parametrize("activations", ["per_token", "per_tensor", "static"])
def test_int8_linear_equals_fake_quant_exactly_in_float64(backend, activations):
    lin = toy_teacher().bert.encoder.layer[0].intermediate.dense
    x = Tensor(rand((3, 5, 16), 1, 2.0))
    q = Int8Linear.from_float(lin, activations, 0.02)
    f = FakeQuantLinear.from_float(lin, activations, 0.02).eval()
    np.testing.assert_array_equal(q(x).numpy(), f(x).numpy())
    w = lin.weight.numpy()
    # and both are the integer formula written out in NumPy
    x2 = x.numpy().reshape(-1, 16)
    s_x = {"per_token": np.abs(x2).max(1, keepdims=True) / 127, "per_tensor": np.abs(x2).max() / 127 * np.ones((1, 1)),
           "static": np.full((1, 1), 0.02)}[activations]
    s_w = np.abs(w).max(1) / 127
    acc = np.clip(np.round(x2 / s_x), -127, 127) @ np.round(w / s_w[:, None]).T
    np.testing.assert_allclose(q(x).numpy().reshape(-1, 24), acc * s_x * s_w + lin.bias.numpy(), rtol=1e-12, atol=1e-12)


def test_int8_layers_have_no_gradient():
    lin = toy_teacher().bert.encoder.layer[0].intermediate.dense
    q = Int8Linear.from_float(lin)
    x = Tensor(rand((2, 16), 0), requires_grad=True)
    with pytest.raises(RuntimeError, match="quantization-aware"):
        q(x).sum().backward()


def _surrogate_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar function of x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("activations,input_scale", [("per_token", None), ("static", 0.004)])
def test_straight_through_gradients_are_their_definition(activations, input_scale):
    """∂L/∂x is the gradient of x ↦ L(clip(x, ±127.5 s_x) Ŵᵀ) with the dequantized weight Ŵ held fixed, and
    ∂L/∂W that of W ↦ L(x̂ Wᵀ) with the dequantized input x̂ fixed (rounding read as the identity,
    clipped entries getting none) — checked by finite differences in float64."""
    with md.use_backend("numpy"):
        lin = toy_teacher().bert.encoder.layer[0].attention.output.dense
        f = FakeQuantLinear.from_float(lin, activations, input_scale).eval()
        x0 = rand((4, 16), 5, 0.5)
        g = rand((4, 16), 6)
        x = Tensor(x0, requires_grad=True)
        f(x).backward(Tensor(g))
        w = f.weight.numpy()
        s_w = np.abs(w).max(1) / 127
        w_hat = np.round(w / s_w[:, None]) * s_w[:, None]
        s_x = np.abs(x0).max(1, keepdims=True) / 127 if input_scale is None else np.full((1, 1), input_scale)
        bound = 127.5 * s_x
        x_hat = np.clip(np.round(x0 / s_x), -127, 127) * s_x

        def loss_x(v):
            return float(np.sum(g * (np.clip(v, -bound, bound) @ w_hat.T)))

        def loss_w(v):
            return float(np.sum(g * (x_hat @ v.T)))

        np.testing.assert_allclose(np.asarray(x.grad), _surrogate_grad(loss_x, x0), atol=1e-7)
        np.testing.assert_allclose(np.asarray(f.weight.grad), _surrogate_grad(loss_w, w), atol=1e-7)
        if input_scale is not None:
            assert np.any(np.abs(x0) > bound)  # some entries were clipped, and got no gradient
            assert np.all(np.asarray(x.grad)[np.abs(x0) > bound] == 0)
        np.testing.assert_allclose(np.asarray(f.bias.grad), g.sum(0), atol=1e-12)


def test_fake_quant_function_matches_gradcheck_where_rounding_is_flat():
    """Away from rounding boundaries the fake-quantized map is locally constant in x; the STE
    deliberately differs from that zero derivative: the check that our gradient is not it."""
    with md.use_backend("numpy"):
        lin = toy_teacher().bert.encoder.layer[0].attention.output.dense
        x = Tensor(rand((2, 16), 8), requires_grad=True)
        out = FakeQuantLinearFunction.apply(x, lin.weight, lin.bias)
        out.sum().backward()
        assert np.abs(np.asarray(x.grad)).max() > 0


# ------------------------------------------------------------------ whole models
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_model_tracks_float_and_leaves_the_input_alone(backend, mode):
    model = toy_teacher()
    randomise(model, seed=2, scale=0.1)
    before = {k: np.array(v.numpy()) for k, v in model.named_parameters()}
    with no_grad():
        ref = model(**BATCH).logits.numpy()
        q = quantize(model, mode, calibration=[BATCH] if mode == "static" else None)
        out = q(**BATCH).logits.numpy()
    assert not any(p.requires_grad for p in q.parameters())
    assert isinstance(q.bert.encoder.layer[1].output.dense, Int8Linear)
    assert isinstance(q.bert.embeddings.word_embeddings, Int8Embedding)
    np.testing.assert_allclose(out, ref, atol=0.05)
    assert not np.allclose(out, ref, atol=1e-9)  # it really is int8
    for k, v in model.named_parameters():
        np.testing.assert_array_equal(v.numpy(), before[k])


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification])
@pytest.mark.parametrize("activations", ["per_token", "static"])
def test_qat_model_folds_into_int8_exactly_and_round_trips(backend, tmp_path, cls, activations):
    model = toy_teacher(cls)
    randomise(model, seed=3, scale=0.1)
    fake = prepare_qat(model, activations, calibration=[BATCH] if activations == "static" else None)
    fake.train()
    with no_grad():
        fake(**BATCH)  # a training-mode pass moves the static scales (the observer)
    fake.eval()
    folded = md.fold(fake)
    assert describe(folded) is not None and describe(fake) is None
    with no_grad():
        a = fake(**BATCH).logits.numpy()
        b = folded(**BATCH).logits.numpy()
    np.testing.assert_array_equal(a, b)  # bit for bit: the integer products are exact in float64
    folded.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path, backend=backend, dtype="float64")
    assert isinstance(loaded.bert.encoder.layer[0].attention.self.query, Int8Linear)
    assert loaded.bert.encoder.layer[0].attention.self.query.weight.dtype == np.int8
    with no_grad():
        np.testing.assert_array_equal(loaded(**BATCH).logits.numpy(), b)


def test_qat_trains_the_float_weights():
    model = toy_teacher()
    fake = prepare_qat(model).train()
    out = fake(**BATCH, labels=np.array([0, 1, 2]))
    out.loss.backward()
    grads = [p.grad for p in fake.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_calibration_records_each_linear_maps_largest_input():
    model = toy_teacher()
    scales = calibrate(model, [BATCH])
    assert len(scales) == 2 * 6 + 2  # six maps per layer, the pooler and the classifier
    with no_grad():
        out = model(**BATCH, output_hidden_states=True)
    x = out.hidden_states[0].numpy()  # the first layer's query reads the embeddings
    assert scales["bert.encoder.layer.0.attention.self.query"] == pytest.approx(np.abs(x).max() / 127, rel=1e-12)
    assert model.bert.encoder.layer[0].attention.self.query.linear_fn is None  # the hooks are gone
    loose = calibrate(model, [BATCH], percentile=50.0)
    assert all(loose[k] <= scales[k] for k in scales)


def test_bad_requests_are_refused_with_reasons(tmp_path):
    model = toy_teacher()
    with pytest.raises(ValueError, match="calibration"):
        quantize(model, "static")
    with pytest.raises(ValueError, match="mode"):
        quantize(model, "weights-only")
    with pytest.raises(ValueError, match="per_token"):
        quantize(model, activations="static")
    from minidistill.compress.wid import WIDConfig, WIDModel

    wid = WIDModel(model, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
    with pytest.raises(ValueError, match="fold the model first"):
        quantize(wid)
    with pytest.raises(ValueError, match="bits"):
        QuantizedLayout.from_dict({"bits": 4})
    # a float checkpoint under an int8 config is refused, not silently cast
    model.save_pretrained(tmp_path)
    cfg = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(cfg.replace('"architectures"', '"quantization": {"linear": '
                                                      '["bert.pooler.dense"]},\n  "architectures"'))
    with pytest.raises(CheckpointError, match="int8"):
        BertForSequenceClassification.from_pretrained(tmp_path)


# --------------------------------------------------------------- the real model
@pytest.mark.slow
@pytest.mark.checkpoint
def test_real_minilm_in_int8_agrees_with_float(minilm_path):
    """MiniLM-L6 with a classifier fitted on frozen features (ridge regression on 512 training
    sentences): dynamic int8 logits stay within 5% of the float logits' spread on the test
    sentences, and the predictions agree on ≥ 98% of rotten_tomatoes' test set (measured 98.6%:
    this frozen-feature head leaves 3% of the test set within 0.05 of its decision boundary; the
    fine-tuned teacher and students are measured in benchmarks/quantization.py)."""
    from minidistill.data import Tokenizer, load_dataset
    from minidistill.train import predict

    tok = Tokenizer.from_pretrained(minilm_path)
    model = BertForSequenceClassification.from_pretrained(minilm_path, classifier_pooling="mean")
    train = load_dataset("rotten_tomatoes", "train").select(range(512))
    test = load_dataset("rotten_tomatoes", "test")
    feats = []
    with no_grad():
        for b in train.batches(tok, 64, 64, shuffle=False):
            feats.append(model.bert(b["input_ids"], b["attention_mask"]).pooler_output.numpy())
    x = np.concatenate(feats)
    x1 = np.hstack([x, np.ones((len(x), 1))])
    y = np.eye(2)[train.labels] * 2 - 1
    coef = np.linalg.solve(x1.T @ x1 + 1.0 * np.eye(x1.shape[1]), x1.T @ y)  # ridge: (D + 1, 2)
    ops = model.backend
    model.classifier.weight.data = ops.asarray(coef[:-1].T.astype(np.float32))
    model.classifier.bias.data = ops.asarray(coef[-1].astype(np.float32))
    q = quantize(model)
    batch = tok.encode(SENTENCES)
    with no_grad():
        ref = model(**batch).logits.numpy()
        diff = np.abs(q(**batch).logits.numpy() - ref).max()
    assert diff < 0.05 * (ref.max() - ref.min())
    a = predict(model, tok, test, 64, 64).argmax(-1)
    b = predict(q, tok, test, 64, 64).argmax(-1)
    assert np.mean(a == b) >= 0.98
    assert np.mean(a == test.labels) > 0.7  # the fitted head is a real classifier


def test_qat_after_other_methods_folds_exactly():
    """QAT works on what other methods leave: a folded WID student and an unrolled MiniALBERT."""
    from minidistill.compress.minialbert import make_minialbert
    from minidistill.compress.wid import WIDConfig, WIDModel

    teacher = toy_teacher()
    randomise(teacher, seed=6, scale=0.1)
    wid = md.fold(WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)))
    albert = md.fold(make_minialbert(teacher, embedding_size=8, num_repeats=2, adapter_reduction=4), unroll=True)
    for plain in (wid, albert):
        fake = prepare_qat(plain).eval()
        with no_grad():
            np.testing.assert_array_equal(fake(**BATCH).logits.numpy(), md.fold(fake)(**BATCH).logits.numpy())


def test_the_qat_student_of_distill_is_saved_in_int8(tiny_teacher_dir, tmp_path):
    from minidistill.cli import main

    out = tmp_path / "qat"
    rc = main(["distill", f"--teacher.path={tiny_teacher_dir}", "--student.kind=qat", f"--output_dir={out}",
               "--train.max_steps=3", "--train.batch_size=8", "--data.max_train_examples=32",
               "--data.max_eval_examples=16", "--train.max_length=16"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["activations"] == "per_token" and cfg["quantization"]["embeddings"]
    loaded = BertForSequenceClassification.from_pretrained(out)
    assert isinstance(loaded.bert.encoder.layer[3].output.dense, Int8Linear)
    assert main(["evaluate", str(out), "--split", "test"]) == 0


def test_a_static_scale_that_was_never_observed_is_an_error_not_a_guess():
    model = toy_teacher()
    fake = prepare_qat(model, "static").eval()  # no calibration, no training yet
    with pytest.raises(ValueError, match="never observed"):
        fake(**BATCH)
    with pytest.raises(ValueError, match="calibrated input scale"):
        md.fold(fake)
    fake.train()
    with no_grad():
        fake(**BATCH)  # the first training batch sets the scales
    assert float(fake.bert.encoder.layer[0].attention.self.query.input_scale.numpy()[0]) > 0
    fake.eval()
    fake(**BATCH)


def test_a_minialbert_in_int8_keeps_its_sharing_and_round_trips(tmp_path):
    from minidistill.compress.minialbert import make_minialbert
    from minidistill.compress.xtremedistil import make_bilstm_student
    from minidistill.models import MiniAlbertForSequenceClassification

    teacher = toy_teacher()
    albert = make_minialbert(teacher, embedding_size=8, num_repeats=2, adapter_reduction=4).eval()
    q = quantize(albert)
    with no_grad():
        out = q(**BATCH).logits.numpy()
        np.testing.assert_allclose(out, albert(**BATCH).logits.numpy(), atol=0.05)
    q.save_pretrained(tmp_path)
    loaded = MiniAlbertForSequenceClassification.from_pretrained(tmp_path, dtype="float64")
    with no_grad():
        np.testing.assert_array_equal(loaded(**BATCH).logits.numpy(), out)
    with pytest.raises(ValueError, match="BERT-family"):
        quantize(make_bilstm_student(teacher, 8, 8))
