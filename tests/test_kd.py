"""Distillation objectives, layer maps and student creation."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import (AttentionKL, AttentionProbMSE, AttentionScoreMSE, HardKD, HiddenCosine, HiddenMSE, LayerMap,
                                  LogitMSE, SoftKD, choose_layers, make_student, needed_outputs, pca_projection,
                                  total_loss)
from minidistill.core import functions as F
from minidistill.models import BertForSequenceClassification
from minidistill.models.bert import ModelOutput

from .conftest import rand, tiny_bert, toy_data


def _outs(seed, b=2, t=5, d=6, h=2, layers=2, grad=True):
    """Synthetic model outputs: logits, hidden states, attention scores and probabilities."""
    rng = np.random.default_rng(seed)
    T = lambda a: md.Tensor(a, requires_grad=grad)
    scores = [T(rng.standard_normal((b, h, t, t))) for _ in range(layers)]
    mask = np.ones((b, t), dtype=np.int64)
    mask[1, 3:] = 0
    keep = (mask != 0)[:, None, None, :]
    return ModelOutput(logits=T(rng.standard_normal((b, 3))),
                       hidden_states=tuple(T(rng.standard_normal((b, t, d))) for _ in range(layers + 1)),
                       attention_scores=tuple(scores),
                       attentions=tuple(F.softmax(s.detach(), mask=keep) for s in scores)), {"attention_mask": mask}


def _objectives(d_s=6, d_t=6):
    hmap = LayerMap.build("uniform", 2, 2)
    amap = LayerMap.build("uniform", 2, 2, kind="attention")
    md.manual_seed(0)
    return [SoftKD(temperature=2.0), HardKD(), LogitMSE(), HiddenMSE(hmap, d_s, d_t), HiddenCosine(hmap, d_s, d_t),
            AttentionScoreMSE(amap), AttentionKL(amap), AttentionProbMSE(amap)]


@pytest.mark.parametrize("index", range(8))
def test_objective_gradchecks(backend, index):
    obj = _objectives()[index]
    obj_w = _objectives(4, 6)[index] if index in (3, 4) else obj  # projections when widths differ
    for o, d_s in ((obj, 6), (obj_w, 4)):
        if o is obj_w and obj_w is obj:
            continue
        o.to(backend, dtype="float64") if list(o.parameters()) else None
        s, batch = _outs(1, d=d_s)
        t, _ = _outs(2, grad=False)
        leaves = [s.logits, *s.hidden_states, *s.attention_scores]

        def f(*_):
            out = ModelOutput(logits=s.logits, hidden_states=s.hidden_states, attention_scores=s.attention_scores,
                              attentions=s.attentions)
            return o(out, t, batch)

        assert md.gradcheck(f, *leaves, *o.parameters())


def test_soft_kd_gradient_identity_and_kl_of_itself(cpu_backend):
    s, _ = _outs(3)
    t, _ = _outs(4, grad=False)
    T, B = 3.0, s.logits.shape[0]
    loss = SoftKD(temperature=T)(s, t)
    loss.backward()
    softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
    expected = T * (softmax(s.logits.numpy() / T) - softmax(t.logits.numpy() / T)) / B
    np.testing.assert_allclose(s.logits.grad, expected, atol=1e-12)
    same = ModelOutput(logits=md.Tensor(s.logits.numpy()))
    assert abs(SoftKD(temperature=T)(same, same).item()) < 1e-12
    assert abs(AttentionKL(LayerMap.build("uniform", 2, 2, "attention"))(
        ModelOutput(attention_scores=s.attention_scores), ModelOutput(attentions=s.attentions),
        {"attention_mask": _outs(3)[1]["attention_mask"]}).item()) < 1e-12


def test_objectives_match_torch(cpu_backend):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    s, batch = _outs(5)
    t, _ = _outs(6, grad=False)
    m = torch.tensor(batch["attention_mask"], dtype=torch.float64)
    ts = lambda x: torch.tensor(x.numpy(), requires_grad=True)
    # soft KD
    zs, zt = ts(s.logits), torch.tensor(t.logits.numpy())
    ref = TF.kl_div(TF.log_softmax(zs / 2, -1), TF.log_softmax(zt / 2, -1), reduction="batchmean", log_target=True) * 4
    assert SoftKD()(s, t).item() == pytest.approx(ref.item(), rel=1e-12)
    # hidden MSE over real tokens, summed over the mapped layers
    hmap = LayerMap.build("uniform", 2, 2)
    ref = sum(((ts(a) - torch.tensor(b.numpy())) ** 2).sum(-1).mul(m).sum() / (m.sum() * 6)
              for a, b in zip(s.hidden_states, t.hidden_states))
    assert HiddenMSE(hmap, 6, 6)(s, t, batch).item() == pytest.approx(ref.item(), rel=1e-12)
    # attention KL over real query rows, batch-mean over (b, h, query)
    amap = LayerMap.build("uniform", 2, 2, "attention")
    ref = 0.0
    for a, p in zip(s.attention_scores, t.attentions):
        sa = torch.tensor(a.numpy()).masked_fill(m[:, None, None, :] == 0, float("-inf"))
        pp = torch.tensor(p.numpy())
        kl = torch.where(pp > 0, pp * (pp.log() - TF.log_softmax(sa, -1)), torch.zeros(())).sum(-1)
        ref += (kl * m[:, None, :]).sum() / (m.sum() * 2)
    assert AttentionKL(amap)(s, t, batch).item() == pytest.approx(float(ref), rel=1e-10)
    # attention-probability MSE over real (query, key) pairs, averaged over heads (XtremeDistil)
    ref = 0.0
    pair = m[:, None, :, None] * m[:, None, None, :]
    for a, p in zip(s.attention_scores, t.attentions):
        q = torch.softmax(torch.tensor(a.numpy()).masked_fill(m[:, None, None, :] == 0, float("-inf")), -1)
        ref += (((q - torch.tensor(p.numpy())) ** 2) * pair).sum() / (pair.sum() * 2)
    assert AttentionProbMSE(amap)(s, t, batch).item() == pytest.approx(float(ref), rel=1e-10)


def test_padded_positions_change_nothing(cpu_backend):
    s, batch = _outs(7)
    t, _ = _outs(8, grad=False)
    hmap, amap = LayerMap.build("uniform", 2, 2), LayerMap.build("uniform", 2, 2, "attention")
    objs = [HiddenMSE(hmap, 6, 6), HiddenCosine(hmap, 6, 6), AttentionScoreMSE(amap), AttentionKL(amap),
            AttentionProbMSE(amap)]
    before = [o(s, t, batch).item() for o in objs]
    # scribble over the padded positions (example 1, tokens 3..4) of the teacher's hidden states and scores
    for h in t.hidden_states:
        h.data[1, 3:] = 1e3
    for a in t.attention_scores:
        a.data[1, :, 3:, :] = -7.0
        a.data[1, :, :, 3:] = 9.0
    after = [o(s, t, batch).item() for o in objs]
    np.testing.assert_allclose(after, before, rtol=1e-12)
    total_loss(objs, s, t, batch).backward()
    for h in s.hidden_states:
        assert np.all(h.grad[1, 3:] == 0)
    for a in s.attention_scores:
        assert np.all(a.grad[1, :, 3:, :] == 0) and np.all(a.grad[1, :, :, 3:] == 0)


def test_hard_kd_threshold_and_needed_outputs(cpu_backend):
    s = ModelOutput(logits=md.Tensor(rand((3, 2)), requires_grad=True))
    t = ModelOutput(logits=md.Tensor(np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 5.0]])))
    expected = F.cross_entropy(md.Tensor(s.logits.numpy()), np.array([0, -100, 1])).item()
    assert HardKD(threshold=0.9)(s, t).item() == pytest.approx(expected)
    flags = needed_outputs(_objectives())
    assert flags == {"output_hidden_states": True, "output_attentions": True, "output_attention_scores": True,
                     "output_qkv": False}


def test_layer_maps_and_their_errors():
    assert LayerMap.build("skip", 3, 12).pairs == ((0, 0), (1, 4), (2, 8), (3, 12))
    assert LayerMap.build("uniform", 2, 6, "attention").pairs == ((0, 2), (1, 5))
    assert LayerMap.build("last", 2, 6).pairs == ((2, 6),)
    assert LayerMap.build([1, 3], 2, 6).pairs == ((1, 1), (2, 3))
    assert LayerMap.build([0, 2, 4], 2, 6).pairs == ((0, 0), (1, 2), (2, 4))
    with pytest.raises(ValueError, match="teacher index 9 does not exist"):
        LayerMap.build([1, 9], 2, 6)
    with pytest.raises(ValueError, match="multiple of the student depth"):
        LayerMap.build("uniform", 4, 6)
    with pytest.raises(ValueError, match="unknown layer map"):
        LayerMap.build("diagonal", 2, 6)
    s, batch = _outs(9, h=2)
    t, _ = _outs(10, h=3, grad=False)
    with pytest.raises(ValueError, match="equal head counts"):
        AttentionKL(LayerMap.build("uniform", 2, 2, "attention"))(s, t, batch)


@pytest.fixture(scope="module")
def teacher(minilm_path):
    return BertForSequenceClassification.from_pretrained(minilm_path, backend="numba", num_labels=2)


def test_student_with_all_layers_reproduces_the_teacher(teacher):
    student = make_student(teacher, 6, init=list(range(6)))
    ids = np.array([[101, 2023, 3185, 2003, 2204, 102], [101, 2919, 102, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    with md.no_grad():
        np.testing.assert_array_equal(student(ids, mask).logits.numpy(), teacher(ids, mask).logits.numpy())


def test_student_inits_copy_the_chosen_layers(teacher):
    assert choose_layers("lower", 6, 2) == [0, 1] and choose_layers("upper", 6, 2) == [4, 5]
    assert choose_layers("uniform", 6, 3) == [1, 3, 5] and choose_layers("random", 6, 2) is None
    student = make_student(teacher, 2, init="upper")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    np.testing.assert_array_equal(s_state["bert.encoder.layer.0.output.dense.weight"], t_state["bert.encoder.layer.4.output.dense.weight"])
    np.testing.assert_array_equal(s_state["classifier.weight"], t_state["classifier.weight"])
    with pytest.raises(ValueError, match=r"do not exist: the teacher has layers 0..5"):
        make_student(teacher, 2, init=[0, 7])
    with pytest.raises(ValueError, match="unknown init"):
        make_student(teacher, 2, init="middle")


def test_narrow_student_embeddings_are_the_pca_of_the_teacher(teacher):
    student = make_student(teacher, 2, hidden_size=128, init="random")
    assert student.config.hidden_size == 128 and student.config.num_attention_heads == 4
    E = teacher.state_dict()["bert.embeddings.word_embeddings.weight"]
    mean, v = pca_projection(E, 128)
    np.testing.assert_allclose(v.T @ v, np.eye(128), atol=1e-10)  # orthonormal directions
    np.testing.assert_allclose(student.state_dict()["bert.embeddings.word_embeddings.weight"], (E - mean) @ v, rtol=1e-5, atol=1e-6)
    with md.no_grad():
        assert student(np.array([[101, 2204, 102]])).logits.shape == (1, 2)


def test_distill_teaches_a_student_the_teachers_predictions(minilm_path):
    from minidistill.compress import distill
    from minidistill.data import Tokenizer
    from minidistill.train import TrainConfig, predict

    
    tok = Tokenizer.from_pretrained(minilm_path)
    data = toy_data(48, seed=1)
    with md.use_backend("numba"):
        teacher = tiny_bert(0, layers=2)
    md.train.Trainer(teacher, tok, data, None, TrainConfig(lr=3e-3, max_steps=60, batch_size=16, max_length=16,
                                                           warmup_ratio=0.0, weight_decay=0.0, progress=False)).train()
    teacher.eval()
    target = predict(teacher, tok, data, max_length=16).argmax(-1)
    student = make_student(teacher, 1, init="lower")
    amap = LayerMap.build([1], 1, 2, "attention")
    hmap = LayerMap.build("last", 1, 2)
    cfg = TrainConfig(lr=3e-3, max_steps=80, batch_size=16, max_length=16, warmup_ratio=0.0, weight_decay=0.0,
                      progress=False)
    losses = []
    trainer = distill(teacher, student, tok, data.without_labels(), None,
                      objectives=[SoftKD(temperature=2.0), AttentionKL(amap), HiddenMSE(hmap, 32, 32, weight=0.1)],
                      config=cfg, callbacks={"on_step_end": [lambda t: losses.append(t.last_loss)]})
    assert trainer.state.step == 80
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    agree = (predict(student, tok, data, max_length=16).argmax(-1) == target).mean()
    assert agree >= 0.9, agree
    with pytest.raises(ValueError, match="needs labelled training data"):
        distill(teacher, student, tok, data.without_labels(), task_weight=1.0, config=cfg)


def _qkv_outs(seed, heads, d, b=2, t=5, layers=2, grad=True):
    rng = np.random.default_rng(seed)
    qkv = tuple(tuple(md.Tensor(rng.standard_normal((b, heads, t, d)), requires_grad=grad) for _ in range(3))
                for _ in range(layers))
    mask = np.ones((b, t), dtype=np.int64)
    mask[1, 3:] = 0
    return ModelOutput(qkv=qkv), {"attention_mask": mask}


def test_relation_objectives_gradcheck_identity_and_padding(cpu_backend):
    from minidistill.compress import MiniLMv2Relations, ValueRelationKL

    amap = LayerMap.build("uniform", 2, 2, "attention")
    s, batch = _qkv_outs(1, heads=2, d=3)
    t_same, _ = _qkv_outs(2, heads=2, d=3, grad=False)
    t_wide, _ = _qkv_outs(3, heads=3, d=4, grad=False)  # teacher: 3 heads, width 12; student: 2 heads, width 6
    leaves = [x for layer in s.qkv for x in layer]
    value = ValueRelationKL(amap)
    v2 = MiniLMv2Relations(amap, relation_heads=2)
    assert md.gradcheck(lambda *_: value(s, t_same, batch), *leaves)
    assert md.gradcheck(lambda *_: v2(s, t_wide, batch), *leaves)
    itself = ModelOutput(qkv=tuple(tuple(md.Tensor(x.numpy()) for x in layer) for layer in s.qkv))
    assert abs(value(s, itself, batch).item()) < 1e-12 and abs(v2(s, itself, batch).item()) < 1e-12
    before = v2(s, t_wide, batch).item()
    for layer in t_wide.qkv:
        for x in layer:
            x.data[1, :, 3:] = 50.0  # padded tokens of example 1
    assert v2(s, t_wide, batch).item() == pytest.approx(before, rel=1e-12)
    with pytest.raises(ValueError, match="relation heads \\(5\\) must divide the width"):
        MiniLMv2Relations(amap, relation_heads=5)(s, t_wide, batch)


def test_model_exposes_queries_keys_values(teacher):
    from minidistill.compress import ValueRelationKL

    ids = np.array([[101, 2023, 3185, 2003, 102], [101, 2919, 102, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    with md.no_grad():
        out = teacher(ids, mask, output_qkv=True, output_hidden_states=True)
        att = teacher.bert.encoder.layer[0].attention
        q0 = att.self.split_heads(att.self.query(out.hidden_states[0]))
    assert len(out.qkv) == 6 and out.qkv[0][0].shape == (2, 12, 5, 32)
    np.testing.assert_array_equal(out.qkv[0][0].numpy(), q0.numpy())
    amap = LayerMap.build("uniform", 6, 6, "attention")
    assert abs(ValueRelationKL(amap)(out, out, {"attention_mask": mask}).item()) < 1e-6
    assert needed_outputs([ValueRelationKL(amap)])["output_qkv"]
