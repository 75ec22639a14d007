"""Logit objectives on token-classification and QA outputs: padding and non-first sub-words never
count (padding a batch further changes no loss or gradient), float64 gradcheck, and the values
against PyTorch on the positions that count."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import HardKD, LogitMSE, SoftKD
from minidistill.core import gradcheck
from minidistill.models import BertForQuestionAnswering, BertForTokenClassification
from minidistill.models.bert import ModelOutput

from .conftest import IDS, MASK, rand, toy_teacher

torch = pytest.importorskip("torch")
OBJECTIVES = [lambda: SoftKD(temperature=2.0), lambda: HardKD(), lambda: HardKD(threshold=0.4), lambda: LogitMSE()]
#: first sub-words of the words in IDS (position 0 and the last real token are [CLS] / [SEP])
FIRST = np.array([[0, 1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 1, 1, 0]])


def _t(a, grad=False):
    return md.Tensor(a, requires_grad=grad, backend="numpy")


def _pad(a, extra, value=0.0):
    """``a`` with ``extra`` more positions on axis 1, filled with ``value`` (noise when None)."""
    shape = list(a.shape)
    shape[1] = extra
    fill = rand(shape, seed=9) * 5 if value is None else np.full(shape, value)
    return np.concatenate([a, fill.astype(a.dtype)], axis=1)


@pytest.mark.parametrize("make", OBJECTIVES)
def test_token_logit_objectives_ignore_padding_and_later_subwords(make):
    s, t = rand((3, 7, 5), 0), rand((3, 7, 5), 1) * 2
    batch = {"attention_mask": MASK, "token_mask": FIRST}
    st = _t(s, grad=True)
    loss = make()(ModelOutput(logits=st), ModelOutput(logits=_t(t)), batch)
    loss.backward()
    # garbage in padded columns (and in non-first sub-words) changes nothing
    s2 = _pad(s, 3, None)
    s2[:, :7][FIRST == 0] += rand((int((FIRST == 0).sum()), 5), 4) * 3
    t2 = _pad(t, 3, None)
    st2 = _t(s2, grad=True)
    batch2 = {"attention_mask": _pad(MASK, 3, 0).astype(np.int64), "token_mask": _pad(FIRST, 3, 0).astype(np.int64)}
    loss2 = make()(ModelOutput(logits=st2), ModelOutput(logits=_t(t2)), batch2)
    loss2.backward()
    assert abs(loss.item() - loss2.item()) < 1e-12
    g2 = st2.grad[:, :7].copy()
    np.testing.assert_allclose(g2[FIRST == 1], st.grad[FIRST == 1], atol=1e-12)
    assert np.abs(g2[FIRST == 0]).max() == 0 and np.abs(st2.grad[:, 7:]).max() == 0


def test_token_soft_kd_matches_torch_on_counted_positions():
    s, t, T = rand((3, 7, 5), 0), rand((3, 7, 5), 1) * 2, 3.0
    loss = SoftKD(temperature=T)(ModelOutput(logits=_t(s)), ModelOutput(logits=_t(t)),
                                 {"attention_mask": MASK, "token_mask": FIRST})
    keep = torch.tensor(FIRST == 1)
    ref = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(s)[keep] / T, -1),
                                     torch.log_softmax(torch.tensor(t)[keep] / T, -1),
                                     reduction="batchmean", log_target=True) * T * T
    assert abs(loss.item() - ref.item()) < 1e-12
    hard = HardKD()(ModelOutput(logits=_t(s)), ModelOutput(logits=_t(t)), {"attention_mask": MASK, "token_mask": FIRST})
    ref = torch.nn.functional.cross_entropy(torch.tensor(s)[keep], torch.tensor(t)[keep].argmax(-1))
    assert abs(hard.item() - ref.item()) < 1e-12


def _qa_out(start, end, grad=False):
    s, e = _t(start, grad), _t(end, grad)
    return ModelOutput(start_logits=s, end_logits=e, logits=None), (s, e)


@pytest.mark.parametrize("make", OBJECTIVES)
def test_qa_objectives_are_over_real_positions(make):
    ss, se, ts, te = (rand((3, 7), k) * (1 + k) for k in range(4))
    out, (gs, ge) = _qa_out(ss, se, grad=True)
    loss = make()(out, _qa_out(ts, te)[0], {"attention_mask": MASK})
    loss.backward()
    out2, (gs2, ge2) = _qa_out(_pad(ss, 2, None), _pad(se, 2, None), grad=True)
    ss_pad = ss.copy()
    ss_pad[MASK == 0] = 50.0  # a huge logit on a padded position changes nothing either
    out3, _ = _qa_out(ss_pad, se)
    batch2 = {"attention_mask": _pad(MASK, 2, 0).astype(np.int64)}
    loss2 = make()(out2, _qa_out(_pad(ts, 2, None), _pad(te, 2, None))[0], batch2)
    loss2.backward()
    loss3 = make()(out3, _qa_out(ts, te)[0], {"attention_mask": MASK})
    assert abs(loss.item() - loss2.item()) < 1e-12 and abs(loss.item() - loss3.item()) < 1e-12
    np.testing.assert_allclose(gs2.grad[:, :7], gs.grad, atol=1e-12)
    np.testing.assert_allclose(ge2.grad[:, :7], ge.grad, atol=1e-12)
    assert np.abs(gs2.grad[:, 7:]).max() == 0


def test_qa_soft_kd_is_the_mean_of_start_and_end_kl():
    ss, se, ts, te = (rand((3, 7), k) for k in range(4))
    T = 2.0
    loss = SoftKD(temperature=T)(_qa_out(ss, se)[0], _qa_out(ts, te)[0], {"attention_mask": MASK})
    ref = 0.0
    for s, t in ((ss, ts), (se, te)):
        for b in range(3):
            n = MASK[b].sum()
            ref += torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(s[b, :n]) / T, -1),
                                              torch.log_softmax(torch.tensor(t[b, :n]) / T, -1),
                                              reduction="sum", log_target=True).item() * T * T / 3
    assert abs(loss.item() - ref / 2) < 1e-12


@pytest.mark.parametrize("make", OBJECTIVES)
def test_token_objectives_gradcheck(make):
    t = _t(rand((3, 7, 5), 1) * 2)
    batch = {"attention_mask": MASK, "token_mask": FIRST}
    gradcheck(lambda s: make()(ModelOutput(logits=s), ModelOutput(logits=t), batch), _t(rand((3, 7, 5), 0), True))
    ts, te = _t(rand((3, 7), 2)), _t(rand((3, 7), 3))
    gradcheck(lambda s, e: make()(ModelOutput(start_logits=s, end_logits=e), ModelOutput(start_logits=ts, end_logits=te),
                                  {"attention_mask": MASK}),
              _t(rand((3, 7), 0), True), _t(rand((3, 7), 1), True))


@pytest.mark.parametrize("cls", [BertForTokenClassification, BertForQuestionAnswering])
def test_model_outputs_feed_the_objectives_padding_free(cls):
    """Through real models: a token / QA teacher and student, the batch padded with three more
    columns, give the same SoftKD loss and student gradients."""
    teacher, student = toy_teacher(cls, seed=0), toy_teacher(cls, seed=1)
    student.train()
    ids2 = np.concatenate([IDS, np.zeros((3, 3), dtype=IDS.dtype)], axis=1)
    m2 = (ids2 != 0).astype(np.int64)
    grads = []
    for ids, m in ((IDS, MASK), (ids2, m2)):
        batch = {"input_ids": ids, "attention_mask": m, "token_mask": np.pad(FIRST, ((0, 0), (0, ids.shape[1] - 7)))}
        student.zero_grad()
        with md.no_grad():
            t_out = teacher(input_ids=ids, attention_mask=m)
        loss = SoftKD(temperature=2.0)(student(input_ids=ids, attention_mask=m), t_out, batch)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.copy() for n, p in student.named_parameters() if p.grad is not None}))
    assert abs(grads[0][0] - grads[1][0]) < 1e-12
    for n, g in grads[0][1].items():
        if "position_embeddings" in n:
            g, g2 = g[:7], grads[1][1][n][:7]
        else:
            g2 = grads[1][1][n]
        np.testing.assert_allclose(g2, g, atol=1e-12, err_msg=n)
