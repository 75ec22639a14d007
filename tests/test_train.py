"""Training pieces against independent references: schedules and AdamW against torch and
transformers step by step, clipping against torch, metrics against exact identities, and
overfitting one batch on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.data import Tokenizer
from minidistill.train import AdamW, Schedule, TrainConfig, Trainer, clip_grad_norm, metrics

from .conftest import tiny_bert, toy_data

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("kind,warmup", [("linear", 3), ("cosine", 3), ("constant", 3), ("linear", 0), ("cosine", 0)])
def test_schedules_match_reference_step_by_step(kind, warmup):
    total, base = 20, 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=base)
    if warmup:
        make = {"linear": transformers.get_linear_schedule_with_warmup,
                "cosine": transformers.get_cosine_schedule_with_warmup}
        ref = (make[kind](ref_opt, warmup, total) if kind != "constant"
               else transformers.get_constant_schedule_with_warmup(ref_opt, warmup))
    else:  # torch's own schedulers
        ref = (torch.optim.lr_scheduler.LinearLR(ref_opt, 1.0, 0.0, total) if kind == "linear"
               else torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, total))
    ours = Schedule(md.train.SGD([md.nn.Parameter(np.zeros(1))], lr=base), kind, total, warmup)
    for _ in range(total):
        assert abs(ours.get_last_lr()[0] - ref.get_last_lr()[0]) < 1e-9
        ref_opt.step()
        ref.step()
        ours.step()


def test_adamw_with_warmup_schedule_matches_torch(cpu_backend):
    model = tiny_bert(1, layers=1)
    model.to(dtype="float64")
    ref = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in model.named_parameters()}
    ours = AdamW(list(model.parameters()), lr=1e-3, weight_decay=0.01)
    theirs = torch.optim.AdamW(list(ref.values()), lr=1e-3, weight_decay=0.01)
    s1 = Schedule(ours, "linear", 10, 2)
    s2 = transformers.get_linear_schedule_with_warmup(theirs, 2, 10)
    rng = np.random.default_rng(0)
    for _ in range(10):
        for n, p in model.named_parameters():
            g = rng.standard_normal(p.shape)
            p.grad, ref[n].grad = g.copy(), torch.tensor(g)
        ours.step(), theirs.step(), s1.step(), s2.step()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.numpy(), ref[n].detach().numpy(), atol=1e-6, rtol=0)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) * 3 for s in ((4, 5), (7,))]
    ps = [md.nn.Parameter(np.zeros_like(g)) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.copy()
    tp = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, g in zip(tp, grads):
        p.grad = torch.tensor(g)
    n1 = clip_grad_norm(ps, 1.5)
    n2 = torch.nn.utils.clip_grad_norm_(tp, 1.5)
    assert abs(n1 - float(n2)) < 1e-9
    for p, q in zip(ps, tp):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9)


def test_metrics_against_exact_identities():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    assert metrics.accuracy(pred, gold) == np.mean(pred == gold)
    tp = np.sum((pred == 1) & (gold == 1))
    fp, fn = np.sum((pred == 1) & (gold == 0)), np.sum((pred == 0) & (gold == 1))
    assert abs(metrics.f1(pred, gold) - 2 * tp / (2 * tp + fp + fn)) < 1e-12
    # binary MCC is the Pearson correlation of the 0/1 vectors
    assert abs(metrics.matthews(pred, gold) - np.corrcoef(pred, gold)[0, 1]) < 1e-12
    assert metrics.matthews(gold, gold) == pytest.approx(1.0) and metrics.matthews(1 - gold, gold) == pytest.approx(-1.0)
    x, y = rng.standard_normal(50), rng.standard_normal(50)
    assert abs(metrics.pearson(x, y) - np.corrcoef(x, y)[0, 1]) < 1e-12
    rank = lambda a: np.argsort(np.argsort(a))  # no ties: ranks by double argsort
    assert abs(metrics.spearman(x, y) - np.corrcoef(rank(x), rank(y))[0, 1]) < 1e-12
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties share ranks
    np.testing.assert_allclose(metrics._ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return Tokenizer.from_pretrained(minilm_path)


@pytest.mark.parametrize("name", ["numpy", "numba", "torch"])
def test_overfit_one_batch_on_every_backend(tokenizer, name):
    data = toy_data()
    with md.use_backend(name):
        model = tiny_bert(0)
    cfg = TrainConfig(lr=3e-3, batch_size=32, max_steps=60, warmup_ratio=0.0, schedule="constant",
                      max_length=16, progress=False, weight_decay=0.0)
    Trainer(model, tokenizer, data, None, cfg).train()
    result = md.train.evaluate(model, tokenizer, data, max_length=16)
    assert result["accuracy"] == 1.0, result


def test_training_is_deterministic_on_cpu_backends(tokenizer):
    data = toy_data()
    finals = []
    for _ in range(2):
        with md.use_backend("numba"):
            model = tiny_bert(0, dropout=0.1)  # dropout draws must repeat too
        cfg = TrainConfig(lr=1e-3, batch_size=8, max_steps=6, max_length=16, progress=False, seed=3)
        Trainer(model, tokenizer, data, None, cfg).train()
        finals.append({k: v.copy() for k, v in model.state_dict().items()})
    for k in finals[0]:
        np.testing.assert_array_equal(finals[0][k], finals[1][k])
    with md.use_backend("numba"):
        other = tiny_bert(0, dropout=0.1)
    Trainer(other, tokenizer, data, None, TrainConfig(lr=1e-3, batch_size=8, max_steps=6, max_length=16,
                                                      progress=False, seed=4)).train()
    assert any(not np.array_equal(finals[0][k], v) for k, v in other.state_dict().items())  # the seed matters


def test_callbacks_log_and_early_stopping(tokenizer, tmp_path):
    data = toy_data()
    with md.use_backend("numba"):
        model = tiny_bert(0)
    seen = []
    cfg = TrainConfig(lr=0.0, max_steps=12, batch_size=8, eval_every=2, early_stopping_patience=2,
                      max_length=16, progress=False, log_file=str(tmp_path / "log.jsonl"))
    tr = Trainer(model, tokenizer, data, data, cfg, callbacks={"on_step_end": [lambda t: seen.append(t.state.step)]})
    st = tr.train()
    assert st.stopped_early and st.step == 6  # lr 0: no improvement after the first evaluation
    assert seen == list(range(1, 7))
    import json

    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == list(range(1, 7))
    assert sum("eval" in x for x in lines) == 3
    with pytest.raises(ValueError, match="unknown event"):
        tr.add_callback("on_lunch", print)


def test_timing_a_step_changes_nothing(tokenizer):
    """``time_step`` (used to plan a run before it starts) leaves parameters, gradients, the
    random state and a model's own state (Theseus's gate generator) as they were."""
    from minidistill.compress.theseus import TheseusModel
    from minidistill.train.trainer import time_step

    data = toy_data()
    for model in (tiny_bert(0), TheseusModel(tiny_bert(0), num_layers=1, seed=3)):
        before = {n: p.numpy().copy() for n, p in model.named_parameters()}
        ops = model.backend
        rng = ops.get_rng_state()
        own = model.training_state() if hasattr(model, "training_state") else None
        model.eval()
        seconds = time_step(model, tokenizer, data, TrainConfig(batch_size=8, max_length=16))
        assert seconds > 0 and not model.training
        assert all(p.grad is None for p in model.parameters())
        for n, p in model.named_parameters():
            np.testing.assert_array_equal(p.numpy(), before[n])
        assert str(ops.get_rng_state()) == str(rng)
        if own is not None:
            assert model.training_state() == own
