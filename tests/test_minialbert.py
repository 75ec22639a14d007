"""MiniALBERT: one shared layer object, stored once and loaded back shared; identity
adapters; the shared layer's gradient is the sum over repeats; exact unrolling into a
plain BERT (float64, every backend; and transformers after saving); the student made from a
teacher; adapter-only fine-tuning; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open

import minidistill as md
from minidistill.compress import fold, make_minialbert, minialbert_objectives, needed_outputs
from minidistill.compress.fold import clone
from minidistill.models import (BertConfig, BertForSequenceClassification, CheckpointError, MiniAlbertConfig,
                                MiniAlbertForSequenceClassification)
from minidistill.models.stats import executed_parameters
from minidistill.nn import train_adapters_only

IDS = np.array([[2, 7, 9, 11, 5, 3, 0], [2, 4, 13, 3, 0, 0, 0], [2, 21, 8, 17, 6, 19, 3]])
MASK = (IDS != 0).astype(np.int64)
TYPES = np.array([[0, 0, 0, 1, 1, 1, 0], [0] * 7, [0, 0, 1, 1, 1, 1, 1]])
BASE = dict(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=24,
            max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _model(dtype="float64", seed=0, randomise=True, **kw):
    md.manual_seed(seed)
    m = MiniAlbertForSequenceClassification(MiniAlbertConfig(**{**BASE, "embedding_size": 8, "adapter_reduction": 2, **kw}))
    m.to(dtype=dtype).eval()
    if randomise:
        rng = np.random.default_rng(seed + 1)
        for p in m.parameters():
            p.data = p.backend.asarray(p.numpy() + 0.3 * rng.standard_normal(p.shape), dtype=p.dtype.name)
    return m


def test_the_shared_layer_is_one_object_counted_once():
    m = _model()
    layer_params = sum(p.size for p in m.encoder.shared_layer.parameters())
    names = [n for n, _ in m.named_parameters()]
    assert sum(n.startswith("encoder.shared_layer.") for n in names) == len(list(m.encoder.shared_layer.parameters()))
    assert m.num_parameters() == sum(p.size for p in m.parameters())
    assert executed_parameters(m) == m.num_parameters() + 2 * layer_params  # 3 repeats


def test_save_and_load_keep_the_layer_shared(tmp_path):
    m = _model(adapter_kind="phm", adapter_reduction=4)
    logits = m(IDS, MASK, TYPES).logits.numpy()
    m.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "numpy") as fh:
        keys = list(fh.keys())
    assert sum(k.startswith("encoder.shared_layer.attention.self.query.weight") for k in keys) == 1
    assert sum(k.endswith("phm_rule") for k in keys) == 1
    loaded = MiniAlbertForSequenceClassification.from_pretrained(tmp_path, dtype="float64")
    np.testing.assert_allclose(loaded(IDS, MASK, TYPES).logits.numpy(), logits, atol=1e-12, rtol=0)
    assert loaded.num_parameters() == m.num_parameters()
    # one object: changing it changes every repeat, so the output moves
    q = loaded.encoder.shared_layer.attention.self.query.weight
    q.data = q.data * 0.0
    assert np.abs(loaded(IDS, MASK, TYPES).logits.numpy() - logits).max() > 1e-3


def test_zero_up_projections_make_the_adapters_identities(backend):
    with_adapters = _model(randomise=False)
    for a in with_adapters.encoder.adapters:  # a trained-looking down-projection; up stays zero
        for ad in (a.attention, a.ffn):
            ad.down.weight.data = ad.down.weight.data + 0.5
    without = _model(randomise=False, adapter_reduction=0)
    state = {k: v for k, v in with_adapters.state_dict().items() if "adapters." not in k}
    without.load_state_dict(state)
    np.testing.assert_allclose(with_adapters(IDS, MASK).logits.numpy(), without(IDS, MASK).logits.numpy(),
                               atol=1e-12, rtol=0)


def test_shared_layer_gradient_is_the_sum_over_repeats(cpu_backend):
    """Backward through the recursion equals backward through the unrolled copy, summed."""
    m = _model()
    unrolled = fold(m, unroll=True)
    target = md.tensor(np.arange(3) % 3)
    md.nn.functional.cross_entropy(m(IDS, MASK).logits, target.data).backward()
    md.nn.functional.cross_entropy(unrolled(IDS, MASK).logits, target.data).backward()
    ops = m.backend
    per_layer = dict(unrolled.named_parameters())
    for name, p in m.encoder.shared_layer.named_parameters():
        summed = sum(ops.to_numpy(per_layer[f"bert.encoder.layer.{r}.{name}"].grad) for r in range(3))
        np.testing.assert_allclose(ops.to_numpy(p.grad), summed, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(adapter_kind="phm", adapter_reduction=4), dict(adapter_reduction=0)])
def test_unroll_is_exact(backend, kw):
    m = _model(**kw)
    out = m(IDS, MASK, TYPES, output_hidden_states=True, output_attentions=True)
    plain, report = fold(m, return_report=True, unroll=True)
    assert type(plain) is BertForSequenceClassification and plain.config.num_hidden_layers == 3
    assert not any(type(x).__name__ == "PHMLinear" for x in plain.modules())
    got = plain(IDS, MASK, TYPES, output_hidden_states=True, output_attentions=True)
    np.testing.assert_allclose(got.logits.numpy(), out.logits.numpy(), atol=1e-9, rtol=0)
    for a, b in zip(got.hidden_states + got.attentions, out.hidden_states + out.attentions):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9, rtol=0)
    assert report.params_after > report.params_before  # the same function with its repeats written out
    with pytest.warns(UserWarning, match="nothing to fold"):
        fold(_model(adapter_reduction=0))  # without unroll a MiniALBERT has nothing to fold


def test_unrolled_model_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    m = _model(dtype="float32", adapter_reduction=0)
    plain = fold(m, unroll=True)
    plain.save_pretrained(tmp_path)
    hf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                    token_type_ids=torch.tensor(TYPES)).logits.numpy()
    np.testing.assert_allclose(theirs, m(IDS, MASK, TYPES).logits.numpy(), atol=1e-5, rtol=0)


def _teacher(layers=1, dtype="float64"):
    md.manual_seed(3)
    cfg = BertConfig(**{**BASE, "num_hidden_layers": layers})
    t = BertForSequenceClassification(cfg).to(dtype=dtype).eval()
    rng = np.random.default_rng(4)
    for p in t.parameters():
        p.data = p.backend.asarray(p.numpy() + 0.2 * rng.standard_normal(p.shape), dtype=p.dtype.name)
    return t


def test_student_with_full_width_embeddings_reproduces_a_one_layer_teacher():
    """E = H keeps every principal direction: the factorised embeddings are the teacher's, the
    shared layer is its layer, so one repeat is the teacher exactly."""
    teacher = _teacher(layers=1)
    student = make_minialbert(teacher, embedding_size=16, num_repeats=1, adapter_reduction=0, shared_init=0)
    np.testing.assert_allclose(student(IDS, MASK, TYPES).logits.numpy(), teacher(IDS, MASK, TYPES).logits.numpy(),
                               atol=1e-9, rtol=0)
    # a narrower E loses information but keeps the most of it
    narrow = make_minialbert(teacher, embedding_size=8, num_repeats=1, adapter_reduction=0, shared_init=0)
    assert narrow.config.embedding_size == 8 and narrow.num_parameters() < student.num_parameters()


def test_student_from_a_deeper_teacher_and_its_objectives():
    teacher = _teacher(layers=6)
    student = make_minialbert(teacher, embedding_size=8, num_repeats=3, adapter_reduction=4)
    assert student.shared_init == 3  # "middle"
    t_state = teacher.state_dict()
    np.testing.assert_array_equal(student.encoder.shared_layer.attention.self.query.weight.numpy(),
                                  teacher.backend.to_numpy(t_state["bert.encoder.layer.3.attention.self.query.weight"]))
    objs = minialbert_objectives(student, teacher)
    assert [type(o).__name__ for o in objs] == ["SoftKD", "AttentionKL", "HiddenCosine"]
    assert objs[1].layer_map.pairs == ((0, 1), (1, 3), (2, 5))  # student l ↔ teacher 2l + 1
    flags = needed_outputs(objs)
    t_out, s_out = teacher(IDS, MASK, **flags), student(IDS, MASK, **flags)
    losses = [float(o(s_out, t_out, {"attention_mask": MASK}).numpy()) for o in objs]
    assert all(np.isfinite(v) and v > 0 for v in losses)


def test_adapter_only_fine_tuning_freezes_the_shared_layer_and_projection(cpu_backend):
    m = _model()
    train_adapters_only(m)
    frozen = {n: p.numpy().copy() for n, p in m.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.shared_layer.attention") for n in frozen)
    assert "embeddings.projection.weight" in frozen
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith("encoder.adapters."))
    opt = md.train.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        m.zero_grad()
        md.nn.functional.cross_entropy(m(IDS, MASK).logits, np.arange(3) % 3).backward()
        assert all(p.grad is None for n, p in m.named_parameters() if n in frozen)
        opt.step()
    for n, p in m.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.numpy(), frozen[n])


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="embedding_size"):
        MiniAlbertConfig(**BASE, embedding_size=0)
    with pytest.raises(ValueError, match="adapter_reduction"):
        MiniAlbertConfig(**BASE, adapter_reduction=-1)
    with pytest.raises(ValueError, match="kind"):
        MiniAlbertConfig(**BASE, adapter_kind="lora")
    with pytest.raises(TypeError, match="MiniAlbertConfig"):
        MiniAlbertForSequenceClassification(BertConfig(**BASE))
    with pytest.raises(ValueError, match="shared_init"):
        make_minialbert(_teacher(layers=2), embedding_size=8, shared_init=5)
    with pytest.raises(ValueError, match="wider"):
        make_minialbert(_teacher(layers=2), embedding_size=32)
    _model().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="'minialbert' model"):
        BertForSequenceClassification.from_pretrained(tmp_path)
    # a clone keeps the sharing (one shared layer object in the copy too)
    c = clone(_model())
    assert c.num_parameters() == _model().num_parameters()


def test_the_original_layer_map_has_no_embedding_pair():
    """MiniALBERT maps student layer l to teacher layer 2l + 1 (layer indices) and nothing to the
    embeddings: hidden states 1..6 ↔ 2, 4, …, 12."""
    from minidistill.compress import LayerMap

    hidden = LayerMap.build("layers", 6, 12, "hidden")
    assert hidden.pairs == tuple((l, 2 * l) for l in range(1, 7))
    assert LayerMap.build("layers", 6, 12, "attention").pairs == tuple((l, 2 * l + 1) for l in range(6))
    teacher = _teacher(layers=4)
    student = make_minialbert(teacher, embedding_size=8, num_repeats=2, adapter_reduction=0)
    objectives = minialbert_objectives(student, teacher)
    for obj in objectives[1:]:
        assert all(s > 0 for s, _ in obj.layer_map.pairs) or obj.layer_map.kind == "attention"
    assert objectives[2].layer_map.pairs == ((1, 2), (2, 4))


def _mlm(dtype="float64", seed=0):
    from minidistill.models import MiniAlbertForMaskedLM

    md.manual_seed(seed)
    m = MiniAlbertForMaskedLM(MiniAlbertConfig(**{**BASE, "embedding_size": 8, "adapter_reduction": 2}))
    m.to(dtype=dtype).eval()
    rng = np.random.default_rng(seed + 1)
    for p in m.parameters():
        p.data = p.backend.asarray(p.numpy() + 0.3 * rng.standard_normal(p.shape), dtype=p.dtype.name)
    return m


@pytest.mark.torch
def test_masked_lm_head_is_albert_s_decoder_path(tmp_path):
    """The MLM head maps H → E and decodes with the E-wide word table (tied): its logits equal
    transformers' AlbertMLMHead loaded with the same weights, on our encoder's output."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.albert.modeling_albert import AlbertMLMHead
    from minidistill.models import MiniAlbertForMaskedLM

    m = _mlm()
    pred = m.cls.predictions
    assert pred.decoder.weight is m.embeddings.word_embeddings.weight and pred.decoder.weight.shape == (30, 8)
    assert pred.transform.dense.weight.shape == (8, 16)
    out = m(IDS, MASK, TYPES, output_hidden_states=True)
    cfg = transformers.AlbertConfig(vocab_size=30, embedding_size=8, hidden_size=16, hidden_act="gelu",
                                    layer_norm_eps=m.config.layer_norm_eps)
    ref = AlbertMLMHead(cfg).double()
    st = {k: torch.tensor(v.numpy()) for k, v in dict(m.named_parameters(remove_duplicate=False)).items()}
    with torch.no_grad():
        ref.dense.weight.copy_(st["cls.predictions.transform.dense.weight"])
        ref.dense.bias.copy_(st["cls.predictions.transform.dense.bias"])
        ref.LayerNorm.weight.copy_(st["cls.predictions.transform.LayerNorm.weight"])
        ref.LayerNorm.bias.copy_(st["cls.predictions.transform.LayerNorm.bias"])
        ref.decoder.weight.copy_(st["embeddings.word_embeddings.weight"])
        ref.bias.copy_(st["cls.predictions.bias"])
        ref.decoder.bias = ref.bias
        want = ref(torch.tensor(out.hidden_states[-1].numpy())).numpy()
    np.testing.assert_allclose(out.logits.numpy(), want, atol=1e-10)
    # saved once, loaded tied; a sentence model takes the encoder and skips the head
    m.save_pretrained(tmp_path / "mlm")
    back = MiniAlbertForMaskedLM.from_pretrained(tmp_path / "mlm", dtype="float64")
    assert back.cls.predictions.decoder.weight is back.embeddings.word_embeddings.weight
    np.testing.assert_allclose(back(IDS, MASK, TYPES).logits.numpy(), out.logits.numpy(), atol=1e-12)
    seq = MiniAlbertForSequenceClassification.from_pretrained(tmp_path / "mlm")
    assert any(k.startswith("cls.") for k in seq.loading_info["ignored"])
    np.testing.assert_array_equal(seq.encoder.shared_layer.output.dense.weight.numpy(),
                                  back.encoder.shared_layer.output.dense.weight.numpy().astype(np.float32))


def test_minialbert_student_of_a_masked_lm_teacher():
    from minidistill.models import BertForMaskedLM, MiniAlbertForMaskedLM

    md.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(**{k: v for k, v in BASE.items() if k != "num_labels"}))
    teacher.to(dtype="float64").eval()
    student = make_minialbert(teacher, embedding_size=8, num_repeats=2, adapter_reduction=4)
    assert type(student) is MiniAlbertForMaskedLM
    assert student.cls.predictions.decoder.weight is student.embeddings.word_embeddings.weight
    np.testing.assert_array_equal(student.cls.predictions.bias.numpy(), teacher.cls.predictions.bias.numpy())
    labels = np.where(MASK == 1, IDS, -100)
    out = student(IDS, MASK, labels=labels)
    out.loss.backward()
    assert out.logits.shape == (3, 7, 30) and np.isfinite(out.loss.item())
    assert np.abs(np.asarray(student.cls.predictions.transform.dense.weight.grad)).sum() > 0
    with pytest.raises(ValueError, match="does not unroll into a BertForMaskedLM"):
        fold(student, unroll=True)
