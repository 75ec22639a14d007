"""BERT-of-Theseus: p = 0 is the predecessor, p = 1 the successor; frozen weights never change
and get no gradient; gates are per module and reproducible; schedules; fold; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import ConstantReplacement, LinearReplacement, TheseusModel, fold
from minidistill.compress.theseus import module_grouping
from minidistill.data import TextDataset, Tokenizer
from minidistill.models import BertConfig, BertForSequenceClassification
from minidistill.train import Trainer, TrainConfig

IDS = np.array([[2, 7, 9, 11, 5, 3, 0], [2, 4, 13, 3, 0, 0, 0]])
MASK = (IDS != 0).astype(np.int64)
LABELS = np.array([0, 2])


def _predecessor(layers=4, dtype="float64", **kw):
    md.manual_seed(0)
    cfg = dict(vocab_size=30, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=24,
               max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(BertConfig(**{**cfg, **kw}))
    model.to(dtype=dtype)
    return model.eval()


def test_p0_is_the_predecessor_and_p1_the_successor(backend):
    pred = _predecessor()
    m = TheseusModel(pred, num_layers=2, init="upper").train()
    m.p = 0.0
    np.testing.assert_array_equal(m(IDS, MASK).logits.numpy(), pred(IDS, MASK).logits.numpy())
    m.p = 1.0
    np.testing.assert_array_equal(m(IDS, MASK).logits.numpy(), m.successor(IDS, MASK).logits.numpy())
    # the successor's layers are the chosen predecessor layers (upper: 2, 3) but act alone,
    # so it is not the predecessor
    assert np.abs(m.successor(IDS, MASK).logits.numpy() - pred(IDS, MASK).logits.numpy()).max() > 1e-6
    m.eval()  # inference runs the successor whatever p is
    m.p = 0.0
    np.testing.assert_array_equal(m(IDS, MASK).logits.numpy(), m.successor(IDS, MASK).logits.numpy())


def test_mixed_forward_runs_each_module_as_its_gate_says():
    pred = _predecessor()
    m = TheseusModel(pred, num_layers=2, seed=3).train()
    m.p = 0.5
    s, p = m.successor.bert, pred.bert
    for _ in range(6):
        out = m(IDS, MASK).logits.numpy()
        gates = m.last_gates
        mask = md.models.bert.keep_mask_from_attention_mask(MASK, s.embeddings.word_embeddings.weight.backend)
        x = s.embeddings(IDS)
        for i, layers in enumerate(m.grouping):
            x = s.encoder.layer[i](x, mask)[0] if gates[i] else p.encoder.layer[layers[1]](
                p.encoder.layer[layers[0]](x, mask)[0], mask)[0]
        ref = m.successor.classifier(s.pooler(x)).numpy()
        np.testing.assert_array_equal(out, ref)


def test_gates_are_per_module_reproducible_and_follow_p():
    pred = _predecessor(layers=6)
    a = TheseusModel(pred, num_layers=3, seed=7).train()
    b = TheseusModel(pred, num_layers=3, seed=7).train()
    ga, gb = [], []
    for _ in range(200):
        a(IDS, MASK)
        b(IDS, MASK)
        ga.append(a.last_gates.copy())
        gb.append(b.last_gates.copy())
    ga = np.array(ga)
    np.testing.assert_array_equal(ga, np.array(gb))
    # per module, not one gate per batch: modules disagree on many steps
    assert (ga.min(1) != ga.max(1)).mean() > 0.5
    assert abs(ga.mean() - 0.5) < 0.06  # 600 Bernoulli(0.5) draws: 4.6 standard deviations


def test_only_the_successor_trains_and_frozen_weights_get_no_gradient(minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    pred = _predecessor(dtype="float32", vocab_size=tok.vocab_size, max_position_embeddings=32, num_labels=2)
    frozen = {k: v.copy() for k, v in pred.state_dict().items()}
    m = TheseusModel(pred, num_layers=2, schedule=LinearReplacement(base=0.3, slope=0.1), seed=0)
    pred_before = {k: v.copy() for k, v in m.predecessor.state_dict().items()}
    succ_before = {k: v.copy() for k, v in m.successor.state_dict().items()}
    texts = [f"a {w} film, {v}" for w in ("fine", "dull", "great", "bad") for v in ("truly", "sadly", "oddly", "very")]
    data = TextDataset(texts, labels=np.arange(16) % 2)
    grads_seen = []
    cbs = m.callbacks()
    cbs["on_step_end"].insert(0, lambda tr: grads_seen.append(any(p.grad is not None for p in m.predecessor.parameters())))
    trainer = Trainer(m, tok, data, None, TrainConfig(lr=1e-3, max_steps=8, batch_size=4, max_length=16,
                                                      progress=False), callbacks=cbs)
    opt_ids = {id(p) for p in trainer.optimizer.parameters()}
    assert opt_ids == {id(p) for p in m.successor.parameters()}
    trainer.train()
    assert not any(grads_seen)
    for k, v in m.predecessor.state_dict().items():
        np.testing.assert_array_equal(v, pred_before[k])
    for k, v in pred.state_dict().items():  # the caller's model is untouched too
        np.testing.assert_array_equal(v, frozen[k])
    assert any(np.abs(v - succ_before[k]).max() > 0 for k, v in m.successor.state_dict().items())
    assert m.p == pytest.approx(min(1.0, 0.3 + 0.1 * 8))
    m.requires_grad_(True)  # unfreezing the model never unfreezes the predecessor
    assert not any(p.requires_grad for p in m.predecessor.parameters())


def test_schedules():
    c = ConstantReplacement(rate=0.5, steps=10)
    assert [c(t) for t in (0, 9, 10, 50)] == [0.5, 0.5, 1.0, 1.0]
    lin = LinearReplacement()  # the original's b = 0.3, k = 6e-4
    assert lin(0) == 0.3 and lin(500) == pytest.approx(0.6) and lin(2000) == 1.0
    with pytest.raises(ValueError, match="rate in"):
        ConstantReplacement(rate=1.5)
    with pytest.raises(ValueError, match="slope"):
        LinearReplacement(slope=-1)


def test_fold_extracts_the_successor():
    m = TheseusModel(_predecessor(), num_layers=2)
    folded, report = fold(m, return_report=True)
    assert type(folded) is BertForSequenceClassification and folded.config.num_hidden_layers == 2
    np.testing.assert_array_equal(folded(IDS, MASK).logits.numpy(), m.successor(IDS, MASK).logits.numpy())
    assert report.params_after == m.successor.num_parameters() < report.params_before
    assert all(p.requires_grad for p in folded.parameters())


def test_groupings_and_bad_input():
    assert module_grouping(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert module_grouping(5, 2, [[0, 1], [2, 3, 4]]) == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError, match="do not split into 4 equal modules"):
        TheseusModel(_predecessor(layers=6), num_layers=4)
    with pytest.raises(ValueError, match="grouping must split"):
        module_grouping(5, 2, [[0, 2], [1, 3, 4]])
    m = TheseusModel(_predecessor(layers=5), num_layers=2, grouping=[[0, 1], [2, 3, 4]]).train()
    m.p = 0.0
    np.testing.assert_array_equal(m(IDS, MASK).logits.numpy(), m.predecessor(IDS, MASK).logits.numpy())
    with pytest.raises(TypeError, match="a BERT task model .sentence, token or QA head., got BertModel"):
        TheseusModel(md.models.BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=24)), 1)


def test_the_original_trains_the_successor_layers_only():
    """train="layers": only the successor's layers are in the optimiser and get gradients; the
    embeddings, pooler and classifier stay as the predecessor's."""
    from minidistill.models import BertConfig, BertForSequenceClassification

    md.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=4, num_attention_heads=4, intermediate_size=24,
                     max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = TheseusModel(BertForSequenceClassification(cfg), 2, train="layers")
    trained = {n for g in model.optimizer_groups(0.01) for p in g["params"] for n, q in model.named_parameters() if q is p}
    assert trained and all(n.startswith("successor.bert.encoder.layer.") for n in trained)
    model.train()
    model.p = 1.0
    ids = np.array([[2, 5, 7, 3], [2, 9, 3, 0]])
    model(ids, (ids != 0).astype(np.int64), labels=np.array([0, 2])).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == n.startswith("successor.bert.encoder.layer."), n
    model.requires_grad_(True)  # unfreezing keeps to the layers
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trained
    with pytest.raises(ValueError, match="train must be one of"):
        TheseusModel(BertForSequenceClassification(cfg), 2, train="heads")


def test_a_step_whose_modules_all_come_from_the_predecessor_trains_nothing(minilm_path):
    """With train="layers" and every gate on the predecessor (p = 0), no trained weight takes
    part in the loss: the step runs without a backward and leaves every weight as it was (the
    original's optimiser would see zero gradients); timing a step before the run works too."""
    from minidistill.train.trainer import time_step

    tok = Tokenizer.from_pretrained(minilm_path)
    pred = _predecessor(dtype="float32", vocab_size=tok.vocab_size, max_position_embeddings=32, num_labels=2)
    m = TheseusModel(pred, num_layers=2, schedule=ConstantReplacement(0.0, 100), seed=0, train="layers")
    before = {k: v.copy() for k, v in m.state_dict().items()}
    data = TextDataset([f"a {w} film" for w in ("fine", "dull", "great", "bad")] * 2, labels=np.arange(8) % 2)
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=4, max_length=16, progress=False)
    assert time_step(m, tok, data, cfg) > 0
    trainer = Trainer(m, tok, data, None, cfg, callbacks=m.callbacks())
    trainer.train()
    assert trainer.state.step == 3 and np.isfinite(trainer.last_loss)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
