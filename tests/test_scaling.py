"""Scaling up: gradient accumulation against one big batch, mixed precision against float32,
fp16 loss scaling, and the fused attention path against the materialised one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import minidistill as md
from minidistill.core import autocast
from minidistill.data import Tokenizer, split_rows
from minidistill.nn.layers import fused_attention_enabled
from minidistill.train import TrainConfig, Trainer

from .conftest import IDS, MASK, randomise, tiny_bert, toy_data, toy_teacher

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return Tokenizer.from_pretrained(minilm_path)


def _train(tokenizer, backend="numpy", dtype="float64", n=30, **kw):
    with md.use_backend(backend):
        model = tiny_bert(0)
    model.to(dtype=dtype)
    cfg = TrainConfig(**{**dict(lr=3e-3, batch_size=8, max_steps=6, max_length=16, progress=False, warmup_ratio=0.3,
                                max_grad_norm=0.5), **kw})
    Trainer(model, tokenizer, toy_data(n), None, cfg).train()
    return _state(model), model


def _state(model) -> dict:
    """The parameters as NumPy copies."""
    return {k: np.array(model.backend.to_numpy(v)) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------ accumulation
@pytest.mark.parametrize("k", [2, 3])
def test_accumulation_equals_one_big_batch_float64(tokenizer, k):
    # 30 examples in batches of 8: the last batch has 6 rows, split 3 + 3 (k=2) or 3 + 3 + 0 → 2 + 2 + 2
    # (k=3); with 8 rows and k=3, micro-batches of 3, 3, 2: unequal, and the clipping and the
    # schedule count optimiser steps, so the parameters must be the big batch's
    ref, _ = _train(tokenizer)
    got, _ = _train(tokenizer, grad_accum_steps=k)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-12, rtol=0, err_msg=name)


def test_accumulation_equals_one_big_batch_float32_torch(tokenizer):
    ref, _ = _train(tokenizer, backend="torch", dtype="float32")
    got, _ = _train(tokenizer, backend="torch", dtype="float32", grad_accum_steps=3)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-6, rtol=0, err_msg=name)


def test_accumulation_weights_by_examples_not_by_micro_batch(tokenizer):
    # the mean over all 5 rows, not the mean of the two micro-batch means (3 rows, 2 rows)
    data = toy_data(5)
    batch = next(iter(data.batches(tokenizer, 5, 16)))
    parts = split_rows(batch, 2)
    assert [len(p["input_ids"]) for p in parts] == [3, 2]
    assert sum(int(p["attention_mask"].sum()) for p in parts) == int(batch["attention_mask"].sum())
    for p in parts:  # each micro-batch keeps only the padding its own rows need
        assert p["input_ids"].shape[1] == int(p["attention_mask"].sum(1).max())
    model = tiny_bert(0)
    model.to(dtype="float64")
    big = model(**md.data.model_inputs(batch), labels=batch["labels"]).loss.item()
    means = [model(**md.data.model_inputs(p), labels=p["labels"]).loss.item() for p in parts]
    weighted = sum(m * len(p["input_ids"]) / 5 for m, p in zip(means, parts))
    assert abs(weighted - big) < 1e-12 and abs(np.mean(means) - big) > 1e-6


def test_accumulation_resumes_at_optimiser_step_boundaries(tokenizer, tmp_path):
    ref, _ = _train(tokenizer, grad_accum_steps=2, max_steps=8)
    first = dict(grad_accum_steps=2, max_steps=8, checkpoint_dir=str(tmp_path), checkpoint_every=3)
    with md.use_backend("numpy"):
        model = tiny_bert(0)
    model.to(dtype="float64")
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_length=16, progress=False, warmup_ratio=0.3, max_grad_norm=0.5,
                      **first)

    class Killed(Exception):
        pass

    def kill(trainer):
        if trainer.state.step == 5:
            raise Killed

    with pytest.raises(Killed):
        Trainer(model, tokenizer, toy_data(30), None, cfg, callbacks={"on_step_end": [kill]}).train()
    with md.use_backend("numpy"):
        fresh = tiny_bert(7)
    fresh.to(dtype="float64")
    Trainer(fresh, tokenizer, toy_data(30), None, cfg).resume().train()
    for name, value in _state(fresh).items():
        np.testing.assert_allclose(value, ref[name], atol=1e-12, rtol=0, err_msg=name)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="int4")
    with md.use_backend("numpy"):
        model = tiny_bert(0)
    with pytest.raises(ValueError, match="torch backend"):
        Trainer(model, None, toy_data(4), None, TrainConfig(precision="bf16"))


# ----------------------------------------------------------------------- mixed precision
def _grads(model, lp=None, fused=True):
    model.zero_grad()
    with autocast(lp), fused_attention_enabled(fused):
        out = model(input_ids=IDS, attention_mask=MASK, labels=np.array([0, 1, 2]))
    out.loss.backward()
    return out.logits.numpy(), {n: p.backend.to_numpy(p.grad).astype(np.float64) for n, p in model.named_parameters()}


@pytest.mark.parametrize("lp,tol", [("bfloat16", 0.05), ("float16", 0.01)])
def test_mixed_precision_gradients_within_low_precision_tolerance(lp, tol):
    model = toy_teacher(dtype="float32")
    randomise(model)
    model.to("torch").train()
    logits, ref = _grads(model)
    logits_lp, got = _grads(model, lp)
    assert np.abs(logits_lp - logits).max() < 8 * tol
    assert not np.array_equal(logits_lp, logits)  # the products did run in low precision
    assert all(p.dtype.name == "float32" for p in model.parameters())  # master weights stay float32
    total = np.sqrt(sum(np.sum(g ** 2) for g in ref.values()))
    err = np.sqrt(sum(np.sum((got[n] - ref[n]) ** 2) for n in ref))
    assert err / total < tol, (err, total)
    for n in ref:  # each tensor too, where its gradient is not (analytically) zero
        if np.linalg.norm(ref[n]) > 1e-3 * total:
            assert np.linalg.norm(got[n] - ref[n]) / np.linalg.norm(ref[n]) < 4 * tol, n


def test_autocast_refuses_backends_without_low_precision_products():
    model = toy_teacher(dtype="float32")
    with autocast("bfloat16"), pytest.raises(RuntimeError, match="torch backend"):
        model(input_ids=IDS, attention_mask=MASK)


def test_distillation_losses_stay_float32_under_autocast():
    # MiniLM's value relation is a product of the student's values: inside total_loss it must
    # not run in bf16 (the same loss with and without autocast around the objective alone)
    from minidistill.compress import LayerMap, ValueRelationKL, total_loss

    teacher, student = toy_teacher(dtype="float32"), toy_teacher(dtype="float32", seed=3)
    teacher.to("torch"), student.to("torch")
    obj = ValueRelationKL(LayerMap(((1, 1),), 2, 2, kind="attention"))
    s_out = student(input_ids=IDS, attention_mask=MASK, output_qkv=True)
    t_out = teacher(input_ids=IDS, attention_mask=MASK, output_qkv=True)
    batch = {"attention_mask": MASK}
    ref = total_loss([obj], s_out, t_out, batch).item()
    with autocast("bfloat16"):
        got = total_loss([obj], s_out, t_out, batch).item()
    assert got == ref


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(tokenizer, tmp_path):
    with md.use_backend("torch"):
        model = tiny_bert(0)
    before = _state(model)
    log = tmp_path / "log.jsonl"
    # a loss scale of 2¹²⁰ overflows float16 gradients (largest finite value 65504)
    cfg = TrainConfig(lr=1e-2, batch_size=8, max_steps=1, max_length=16, progress=False, precision="fp16",
                      loss_scale=2.0 ** 120, log_file=str(log))
    trainer = Trainer(model, tokenizer, toy_data(8), None, cfg)
    trainer.train()
    for k, v in _state(model).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert trainer.state.skipped_steps == 1 and trainer.state.loss_scale == 2.0 ** 119
    record = json.loads(log.read_text().splitlines()[0])
    assert record["skipped"] is True and record["skipped_steps"] == 1
    # a sane scale trains, and the scale doubles after loss_scale_window good steps
    cfg2 = dataclasses.replace(cfg, loss_scale=1024.0, loss_scale_window=2, max_steps=4, log_file=None)
    t2 = Trainer(model, tokenizer, toy_data(32), None, cfg2)
    t2.train()
    assert t2.state.skipped_steps == 0 and t2.state.loss_scale == 4096.0
    assert any(not np.array_equal(v, before[k]) for k, v in _state(model).items())


def test_fp16_unscaled_update_matches_fp32_closely(tokenizer):
    ref, _ = _train(tokenizer, backend="torch", dtype="float32", lr=1e-3)
    got, _ = _train(tokenizer, backend="torch", dtype="float32", lr=1e-3, precision="fp16", loss_scale=256.0)
    moved = sum(np.abs(ref[k] - tiny_bert(0).state_dict()[k]).sum() for k in ref)
    diff = sum(np.abs(ref[k] - got[k]).sum() for k in ref)
    assert diff < 0.05 * moved


# ------------------------------------------------------------------------ fused attention
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_fused_attention_equals_materialised_path(dtype, tol):
    model = toy_teacher(dtype=dtype)
    randomise(model)
    model.to("torch").train()  # dropout 0: the two paths must agree exactly up to rounding
    logits_f, gf = _grads(model, fused=True)
    logits_m, gm = _grads(model, fused=False)
    np.testing.assert_allclose(logits_f, logits_m, atol=tol, rtol=0)
    for n in gm:
        np.testing.assert_allclose(gf[n], gm[n], atol=tol, rtol=0, err_msg=n)


def test_fused_attention_keeps_no_attention_maps():
    model = toy_teacher(dtype="float32")
    model.to("torch").train()
    ids = np.tile(IDS, (4, 4))[:, :16]
    mask = (ids != 0).astype(np.int64)
    for fused in (True, False):
        with fused_attention_enabled(fused):
            loss = model(input_ids=ids, attention_mask=mask, labels=np.zeros(12, dtype=np.int64)).loss
        t = ids.shape[1]
        maps = [e for e in _tape(loss) if len(e.shape) == 4 and e.shape[-2:] == (t, t)]
        assert (len(maps) == 0) == fused
    with fused_attention_enabled(True):  # asked for, the maps are exact (materialised path)
        out = model(input_ids=IDS, attention_mask=MASK, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 4, 7, 7)


def _tape(t):
    """Every tensor entry reachable from ``t`` on the tape."""
    seen, stack, out = set(), [t._entry()], []
    while stack:
        e = stack.pop()
        if id(e) in seen or getattr(e, "_node", None) is None:
            continue
        seen.add(id(e))
        out.append(e)
        stack.extend(i for i in e._node[2] if hasattr(i, "_node"))
    return out


def test_fused_attention_dropout_is_reproducible():
    model = toy_teacher(dtype="float32", attention_probs_dropout_prob=0.3)
    model.to("torch").train()
    outs = []
    for _ in range(2):
        md.manual_seed(5)
        model.backend.seed(5)
        outs.append(model(input_ids=IDS, attention_mask=MASK).logits.numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    model.eval()
    np.testing.assert_allclose(model(input_ids=IDS, attention_mask=MASK).logits.numpy(),
                               _eval_materialised(model), atol=1e-5)


def _eval_materialised(model):
    with fused_attention_enabled(False):
        return model(input_ids=IDS, attention_mask=MASK).logits.numpy()


def test_gpu_check_script_runs_on_cpu_at_a_tiny_size():
    """``benchmarks/gpu_check.py --device cpu --tiny``: the GPU check cannot rot between GPU runs.
    Its parity checks (every op against NumPy, BERT against transformers in fp32 and bf16) must
    pass; it writes nothing on the CPU."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = (root / "benchmarks" / "RESULTS.md").read_text()
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout and proc.stdout.count(" ok ") >= 25
    assert "ours / transformers speed" in proc.stdout
    assert (root / "benchmarks" / "RESULTS.md").read_text() == results


def test_emulated_low_precision_is_announced(monkeypatch):
    import warnings

    with md.use_backend("torch"):
        model = tiny_bert(0)
    ops = model.backend
    monkeypatch.setattr(type(ops), "native_low_precision", lambda self, dtype: False)
    with pytest.warns(UserWarning, match="emulates"):
        Trainer(model, None, toy_data(4), None, TrainConfig(precision="bf16"))
    monkeypatch.setattr(type(ops), "native_low_precision", lambda self, dtype: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(model, None, toy_data(4), None, TrainConfig(precision="bf16"))
