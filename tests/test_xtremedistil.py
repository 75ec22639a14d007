"""XtremeDistil pieces and the distillation runner's plumbing: the learned combine map, [CLS]
and pooled objectives, the BiLSTM student, staged distillation with gradual unfreezing,
the teacher cache inside ``distill`` and text augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import (HiddenMSE, LayerMap, LogitMSE, PooledCosine, PooledMSE, SoftKD, Stage, distill,
                                  make_bilstm_student, xtremedistil_stages)
from minidistill.core import functions as F
from minidistill.data import TeacherCache, augment
from minidistill.models import BiLSTMStudent, CheckpointError
from minidistill.models.bert import ModelOutput
from minidistill.train import TrainConfig, predict

from .conftest import rand, tiny_bert, toy_data


def _states(seed, n, b=2, t=4, d=3, grad=True):
    return tuple(md.tensor(rand((b, t, d), seed=seed + i), requires_grad=grad) for i in range(n))


# --------------------------------------------------------------- objectives
def test_combine_map_gradcheck_and_one_hot_limit(cpu_backend):
    cmap = LayerMap.build("combine", 2, 3)
    assert cmap.combine and cmap.student_indices == (1, 2) and cmap.teacher_indices(1) == (1, 2, 3)
    obj = HiddenMSE(cmap, 3, 3).to(cpu_backend.name, dtype="float64")
    obj.mixing.data = cpu_backend.asarray(rand((2, 3), seed=9))
    s = ModelOutput(hidden_states=_states(0, 3))
    t = ModelOutput(hidden_states=_states(10, 4, grad=False))
    batch = {"attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
    assert md.gradcheck(lambda *_: obj(s, t, batch), *s.hidden_states[1:], obj.mixing)
    # with a (numerically) one-hot mixture the combine loss is the fixed map's loss
    obj.mixing.data = cpu_backend.asarray(np.array([[60.0, 0, 0], [0, 0, 60.0]]))
    fixed = HiddenMSE(LayerMap.build([1, 3], 2, 3), 3, 3)
    np.testing.assert_allclose(obj(s, t, batch).item(), fixed(s, t, batch).item(), rtol=1e-12)
    with pytest.raises(ValueError, match="hidden-state losses only"):
        LayerMap.build("combine", 2, 3, "attention")


def test_linear_combine_map_is_the_concatenation_projected(cpu_backend):
    """How to Distill's combine: W [h_t^1; …; h_t^L] + b; at its start (W the average) it equals
    the softmax mixture at its start, and after a change it is the projection computed by hand."""
    lin = HiddenMSE(LayerMap.build("combine-linear", 2, 3), 3, 3).to(cpu_backend.name, dtype="float64")
    mix = HiddenMSE(LayerMap.build("combine", 2, 3), 3, 3).to(cpu_backend.name, dtype="float64")
    s = ModelOutput(hidden_states=_states(0, 3))
    t = ModelOutput(hidden_states=_states(10, 4, grad=False))
    batch = {"attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
    np.testing.assert_allclose(lin(s, t, batch).item(), mix(s, t, batch).item(), rtol=1e-6)  # 1/3 made in float32
    c = lin.combiners[0]
    c.weight.data = cpu_backend.asarray(rand((3, 9), seed=3))
    c.bias.data = cpu_backend.asarray(rand((3,), seed=4))
    lin.combiners[1].weight.data = cpu_backend.asarray(np.tile(np.eye(3), (1, 3)) / 3)  # the average, in float64
    concat = np.concatenate([t.hidden_states[j].numpy() for j in (1, 2, 3)], axis=-1)  # (B, T, 9)
    target = concat @ rand((3, 9), seed=3).T + rand((3,), seed=4)
    m = batch["attention_mask"][..., None]
    first = ((s.hidden_states[1].numpy() - target) ** 2 * m).sum() / (m.sum() * 3)
    target2 = concat / 3 @ np.tile(np.eye(3), (3, 1))
    second = ((s.hidden_states[2].numpy() - target2) ** 2 * m).sum() / (m.sum() * 3)
    np.testing.assert_allclose(lin(s, t, batch).item(), first + second, rtol=1e-10)
    assert md.gradcheck(lambda *_: lin(s, t, batch), *s.hidden_states[1:], c.weight, c.bias)


def test_cls_hidden_and_pooled_objectives_against_numpy(cpu_backend):
    s = ModelOutput(hidden_states=_states(0, 2), pooler_output=md.tensor(rand((2, 3), seed=5), requires_grad=True))
    t = ModelOutput(hidden_states=_states(10, 2, grad=False), pooler_output=md.tensor(rand((2, 3), seed=6)))
    batch = {"attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])}
    cls = HiddenMSE(LayerMap.build("last", 1, 1), 3, 3, tokens="cls")
    want = np.mean((s.hidden_states[1].numpy()[:, 0] - t.hidden_states[1].numpy()[:, 0]) ** 2)
    np.testing.assert_allclose(cls(s, t, batch).item(), want, rtol=1e-12)
    rs, rt = s.pooler_output.numpy(), t.pooler_output.numpy()
    np.testing.assert_allclose(PooledMSE(3, 3)(s, t).item(), np.mean((rs - rt) ** 2), rtol=1e-12)
    cos = (rs * rt).sum(-1) / np.linalg.norm(rs, axis=-1) / np.linalg.norm(rt, axis=-1)
    np.testing.assert_allclose(PooledCosine(3, 3)(s, t).item(), np.mean(1 - cos), rtol=1e-9)
    md.manual_seed(0)
    proj = PooledMSE(3, 5).to(cpu_backend.name, dtype="float64")
    t5 = ModelOutput(pooler_output=md.tensor(rand((2, 5), seed=7)))
    assert md.gradcheck(lambda *_: proj(s, t5), s.pooler_output, *proj.parameters())


# ----------------------------------------------------------- BiLSTM student
def _bilstm(backend="numpy", dtype="float64"):
    with md.use_backend(backend):
        teacher = tiny_bert(0, layers=2)
    teacher.to(dtype=dtype)
    student = make_bilstm_student(teacher, hidden_size=5, embedding_size=8, dropout=0.0)
    return teacher, student


def test_bilstm_student_inherits_pca_embeddings_and_ignores_padding(cpu_backend):
    teacher, student = _bilstm(cpu_backend.name)
    words = teacher.bert.embeddings.word_embeddings.weight.numpy()
    e = student.embeddings.weight.numpy()
    assert e.shape == (words.shape[0], 8) and student.config.representation_size == 32
    # PCA coordinates: centred, with decreasing variance, and the same Gram structure as the top directions
    assert np.abs(e.mean(0)).max() < 1e-4 and np.all(np.diff(e.var(0)) <= 1e-9)
    ids = np.array([[101, 2204, 3185, 102]])
    padded = np.array([[101, 2204, 3185, 102, 0, 0]])
    student.eval()
    a = student(ids, np.ones_like(ids))
    b = student(padded, (padded != 0).astype(np.int64))
    np.testing.assert_allclose(b.logits.numpy(), a.logits.numpy(), atol=1e-12)
    np.testing.assert_allclose(b.pooler_output.numpy(), a.pooler_output.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="no attention maps"):
        student(ids, output_attentions=True)


def test_bilstm_student_gradcheck_through_max_pool(cpu_backend):
    _, student = _bilstm(cpu_backend.name)
    student.eval()
    ids = np.array([[101, 2204, 3185, 102], [101, 2204, 102, 0]])
    mask = (ids != 0).astype(np.int64)
    labels = np.array([0, 1])
    params = [p for n, p in student.named_parameters() if not n.startswith("embeddings")]
    assert md.gradcheck(lambda *_: student(ids, mask, labels=labels).loss, *params, atol=1e-6, rtol=1e-4)


def test_bilstm_save_load_round_trip_and_errors(tmp_path):
    _, student = _bilstm("numpy", "float32")
    student.save_pretrained(tmp_path / "s")
    again = BiLSTMStudent.from_pretrained(tmp_path / "s")
    for (n, p), (m, q) in zip(student.named_parameters(), again.named_parameters()):
        assert n == m and np.array_equal(p.numpy(), q.numpy())
    cfg = (tmp_path / "s" / "config.json")
    cfg.write_text(cfg.read_text().replace('"hidden_size": 5', '"hidden_size": 6'))
    with pytest.raises(CheckpointError, match="incompatible checkpoint"):
        BiLSTMStudent.from_pretrained(tmp_path / "s")
    cfg.write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not 'minidistill-bilstm'"):
        BiLSTMStudent.from_pretrained(tmp_path / "s")


# ------------------------------------------------------------------ stages
def _trained_teacher(tok, data):
    with md.use_backend("numba"):
        teacher = tiny_bert(0, layers=2)
    md.train.Trainer(teacher, tok, data, None, TrainConfig(lr=3e-3, max_steps=60, batch_size=16, max_length=16,
                                                           warmup_ratio=0.0, weight_decay=0.0, progress=False)).train()
    teacher.eval()
    return teacher


def _cfg(steps, lr=3e-3):
    return TrainConfig(lr=lr, max_steps=steps, batch_size=16, max_length=16, warmup_ratio=0.0, weight_decay=0.0,
                       progress=False)


def test_gradual_unfreezing_trains_only_the_top_groups(tok):
    data = toy_data(32, seed=1)
    teacher = _trained_teacher(tok, data)
    student = md.make_student(teacher, 1, init="lower")
    before = {n: p.numpy().copy() for n, p in student.named_parameters()}
    steps = []  # per step: (trainable names, a copy of every weight)
    record = lambda t: steps.append(({n for n, p in student.named_parameters() if p.requires_grad},  # noqa: E731
                                     {n: p.numpy().copy() for n, p in student.named_parameters()}))
    stage = Stage("logits", [LogitMSE()], data="transfer", unfreeze=True, config=_cfg(3))
    trainer = distill(teacher, student, tok, data, stages=[stage], callbacks={"on_step_end": [record]})
    groups = [name for name, _ in student.layer_groups()]
    assert groups == ["head", "layer.0", "embeddings"]
    assert [r["trained"] for r in trainer.stage_log] == [groups[:k] for k in range(1, len(groups) + 1)]
    head = ("classifier.", "bert.pooler.")
    trainable, after_phase1 = steps[2]
    assert trainable == {n for n in before if n.startswith(head)}
    for n, v in after_phase1.items():  # frozen weights bit-identical, the head moved
        assert np.array_equal(v, before[n]) != n.startswith(head), n
    assert steps[5][0] == {n for n in before if not n.startswith("bert.embeddings.")}
    assert all(p.requires_grad for p in student.parameters())  # everything trainable again afterwards
    assert not np.array_equal(student.bert.embeddings.word_embeddings.weight.numpy(),
                              before["bert.embeddings.word_embeddings.weight"])
    # frozen weights get no gradient computed at all
    student.requires_grad_(False)
    student.classifier.requires_grad_(True)
    batch = next(data.batches(tok, 4, 16))
    F.sum(student(batch["input_ids"], batch["attention_mask"]).logits).backward()
    assert all((p.grad is not None) == n.startswith("classifier.") for n, p in student.named_parameters())


def test_staged_bilstm_recipe_learns_the_teacher(tok):
    data = toy_data(48, seed=2)
    teacher = _trained_teacher(tok, data)
    target = predict(teacher, tok, data, max_length=16).argmax(-1)
    student = make_bilstm_student(teacher, hidden_size=16, dropout=0.0)
    stages = xtremedistil_stages(student, teacher, representation=_cfg(40, 1e-2), logits=_cfg(40, 1e-2),
                                 labels=_cfg(10, 1e-3))
    assert [s.name for s in stages] == ["representation", "logits", "labels"]
    trainer = distill(teacher, student, tok, data, data, stages=stages,
                      transfer_data=augment(data.without_labels(), tok, copies=1, seed=0))
    assert [(r["stage"], r["phase"]) for r in trainer.stage_log] == [
        ("representation", 1), ("logits", 1), ("logits", 2), ("logits", 3), ("labels", 1), ("labels", 2), ("labels", 3)]
    agree = (predict(student, tok, data, max_length=16).argmax(-1) == target).mean()
    assert agree >= 0.85, agree
    with pytest.raises(ValueError, match="either objectives"):
        distill(teacher, student, tok, data, objectives=[LogitMSE()], stages=stages)
    with pytest.raises(ValueError, match="labelled data"):
        Stage("bad", task_weight=1.0, data="transfer")


def test_distill_from_a_cache_equals_distill_with_a_live_teacher(tok, tmp_path):
    data = toy_data(32, seed=3).without_labels()
    teacher = _trained_teacher(tok, toy_data(32, seed=3))
    objectives = lambda: [SoftKD(temperature=2.0), HiddenMSE(LayerMap.build("last", 1, 2), 32, 32)]  # noqa: E731
    # SGD, not Adam: the attention key bias has an exactly zero gradient (softmax ignores a shift
    # shared by all keys), and Adam would turn its round-off noise, which differs between a
    # cached and a live teacher, into steps of size lr.
    cfg = dataclasses.replace(_cfg(6), optimizer="sgd", lr=0.3)
    runs = []
    for cache in (None, tmp_path / "cache"):
        student = md.make_student(teacher, 1, init="lower")
        distill(teacher, student, tok, data, objectives=objectives(), config=cfg, cache_dir=cache)
        runs.append({n: p.numpy() for n, p in student.named_parameters()})
    for n in runs[0]:
        np.testing.assert_allclose(runs[1][n], runs[0][n], atol=2e-5, err_msg=n)
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and TeacherCache(folders[0]).complete
    assert TeacherCache(folders[0]).meta["hidden_states"] == [2]


# ------------------------------------------------------------ augmentation
def test_augmentation_is_seeded_and_perturbs_at_the_given_rates(tok):
    data = toy_data(200, seed=4)
    a = augment(data, tok, copies=2, p_mask=0.2, p_replace=0.1, seed=1)
    b = augment(data, tok, copies=2, p_mask=0.2, p_replace=0.1, seed=1)
    assert a.texts == b.texts and a.labels is None and len(a) == 3 * len(data)
    assert a.texts[:200] == data.texts
    orig = [w for t in data.texts for w in t.split()] * 2
    new = [w for t in a.texts[200:] for w in t.split()]
    assert len(orig) == len(new)
    masked = np.mean([w == "[MASK]" for w in new])
    changed = np.mean([w != o and w != "[MASK]" for w, o in zip(new, orig)])
    assert abs(masked - 0.2) < 0.02 and abs(changed - 0.1) < 0.02, (masked, changed)
    assert augment(data, tok, copies=1, p_mask=0, p_replace=0).texts[200:] == data.texts
    with pytest.raises(ValueError, match="sum <= 1"):
        augment(data, tok, p_mask=0.7, p_replace=0.5)
