"""Module 4: distillation losses, checked against PyTorch and exact identities."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import AttentionKL, AttentionScoreMSE, LayerMap, SoftKD, ValueRelationKL
from minidistill.models.bert import ModelOutput

from .conftest import rng

torch = pytest.importorskip("torch")
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _t(a, grad=False):
    return md.Tensor(a, requires_grad=grad, backend="numpy")


@pytest.mark.task4_1
@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_kd_value_matches_torch(T):
    s, t = rng(0).standard_normal((4, 3)), rng(1).standard_normal((4, 3)) * 2
    loss = SoftKD(temperature=T)(ModelOutput(logits=_t(s)), ModelOutput(logits=_t(t)))
    ref = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(s) / T, -1), torch.log_softmax(torch.tensor(t) / T, -1),
                                     reduction="batchmean", log_target=True) * T * T
    assert abs(loss.item() - ref.item()) < 1e-12


@pytest.mark.task4_1
def test_soft_kd_gradient_identity():
    # d/ds of T²·KL(p_t ‖ p_s) batch-mean is T·(softmax(s/T) − softmax(t/T)) / B.
    T, b = 3.0, 4
    s, t = rng(0).standard_normal((b, 5)), rng(1).standard_normal((b, 5))
    st = _t(s, grad=True)
    SoftKD(temperature=T)(ModelOutput(logits=st), ModelOutput(logits=_t(t))).backward()

    def sm(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    np.testing.assert_allclose(st.grad, T * (sm(s / T) - sm(t / T)) / b, rtol=1e-10, atol=1e-13)


def _attn(seed, b=2, h=2, t=5):
    return rng(seed).standard_normal((b, h, t, t))


@pytest.mark.task4_2
def test_attention_score_mse_over_real_tokens_matches_torch():
    s, t = _attn(0), _attn(1)
    amap = LayerMap.build([0], 1, 1, "attention")
    loss = AttentionScoreMSE(amap)(ModelOutput(attention_scores=[_t(s)]), ModelOutput(attention_scores=[_t(t)]),
                                   {"attention_mask": MASK})
    pair = torch.tensor(MASK[:, None, :, None] * MASK[:, None, None, :], dtype=torch.bool).expand(2, 2, 5, 5)
    ref = torch.nn.functional.mse_loss(torch.tensor(s)[pair], torch.tensor(t)[pair])
    assert abs(loss.item() - ref.item()) < 1e-12


@pytest.mark.task4_2
def test_attention_score_mse_ignores_padded_positions():
    s, t = _attn(0), _attn(1)
    s2 = s.copy()
    s2[1, :, 3:, :] += 100.0
    s2[1, :, :, 3:] -= 50.0
    amap = LayerMap.build([0], 1, 1, "attention")
    f = AttentionScoreMSE(amap)
    a = f(ModelOutput(attention_scores=[_t(s)]), ModelOutput(attention_scores=[_t(t)]), {"attention_mask": MASK})
    b = f(ModelOutput(attention_scores=[_t(s2)]), ModelOutput(attention_scores=[_t(t)]), {"attention_mask": MASK})
    assert abs(a.item() - b.item()) < 1e-12


def _kl_reference(s_scores, p_teacher):
    """Batch-mean KL(p ‖ softmax(s)) over (example, head, real query), real keys only."""
    keep = torch.tensor(MASK, dtype=torch.bool)[:, None, None, :]
    log_q = torch.log_softmax(torch.tensor(s_scores).masked_fill(~keep, float("-inf")), -1)
    p = torch.tensor(p_teacher)
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-300)) - log_q.clamp_min(-1e300)), torch.zeros(()))
    rows = terms.sum(-1)  # (B, H, T)
    real_q = torch.tensor(MASK, dtype=torch.float64)[:, None, :]
    return (rows * real_q).sum() / (real_q.sum() * s_scores.shape[1])


def _masked_softmax(z):
    keep = MASK[:, None, None, :].astype(bool)
    z = np.where(keep, z, -np.inf)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.task4_3
def test_attention_kl_matches_torch():
    s, p = _attn(0), _masked_softmax(_attn(1))
    amap = LayerMap.build([0], 1, 1, "attention")
    loss = AttentionKL(amap)(ModelOutput(attention_scores=[_t(s)]), ModelOutput(attentions=[_t(p)]),
                             {"attention_mask": MASK})
    assert abs(loss.item() - _kl_reference(s, p).item()) < 1e-12


@pytest.mark.task4_3
def test_attention_kl_of_itself_is_zero():
    s = _attn(0)
    amap = LayerMap.build([0], 1, 1, "attention")
    loss = AttentionKL(amap)(ModelOutput(attention_scores=[_t(s)]), ModelOutput(attentions=[_t(_masked_softmax(s))]),
                             {"attention_mask": MASK})
    assert abs(loss.item()) < 1e-12


@pytest.mark.task4_4
def test_value_relation_kl_matches_torch():
    vs, vt = rng(0).standard_normal((2, 2, 5, 4)), rng(1).standard_normal((2, 2, 5, 6))
    amap = LayerMap.build([0], 1, 1, "attention")
    loss = ValueRelationKL(amap)(ModelOutput(qkv=[(None, None, _t(vs))]), ModelOutput(qkv=[(None, None, _t(vt))]),
                                 {"attention_mask": MASK})
    rel_s = vs @ np.swapaxes(vs, -1, -2) / np.sqrt(4)
    p_t = _masked_softmax(vt @ np.swapaxes(vt, -1, -2) / np.sqrt(6))
    assert abs(loss.item() - _kl_reference(rel_s, p_t).item()) < 1e-12


@pytest.mark.task4_4
def test_value_relation_gradient_flows_to_the_student_values():
    vs = _t(rng(0).standard_normal((2, 2, 5, 4)), grad=True)
    vt = rng(1).standard_normal((2, 2, 5, 4))
    amap = LayerMap.build([0], 1, 1, "attention")
    ValueRelationKL(amap)(ModelOutput(qkv=[(None, None, vs)]), ModelOutput(qkv=[(None, None, _t(vt))]),
                          {"attention_mask": MASK}).backward()
    assert vs.grad is not None and np.abs(vs.grad[0]).sum() > 0
    np.testing.assert_array_equal(vs.grad[1, :, 3:], 0.0)  # padded tokens get no gradient
