"""WID compactors, the pruning schedule, and ``fold``: exactness against the compacted model
(float64, every backend), against transformers after saving, and the bad-input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import WIDConfig, WIDModel, fold
from minidistill.compress.wid import CompactedLinear
from minidistill.models import BertForSequenceClassification, BertModel
from minidistill.train import Trainer, TrainConfig

from .conftest import IDS, MASK, randomise, toy_teacher

def _logits(model, backend=None):
    return model(IDS, MASK).logits.numpy()


def test_identity_compactors_reproduce_the_teacher_exactly(backend):
    teacher = toy_teacher()
    wid = WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    np.testing.assert_array_equal(_logits(wid), _logits(teacher))
    # the teacher is untouched: WID works on a copy
    assert all(not n.endswith("compactor") for n, _ in teacher.named_parameters())


@pytest.mark.parametrize("targets", [dict(hidden_size=8, intermediate_size=12, num_attention_heads=2),   # whole heads
                                     dict(hidden_size=8, intermediate_size=10, num_attention_heads=4),   # dims in heads
                                     dict(hidden_size=12, intermediate_size=24, num_attention_heads=3)])
def test_fold_equals_the_masked_model(backend, targets):
    teacher = toy_teacher()
    wid = WIDModel(teacher, WIDConfig(**targets)).eval()
    randomise(wid)
    wid.prune_to_target()
    wid.harden()
    folded, report = fold(wid, return_report=True)
    cfg = folded.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (
        targets["hidden_size"], targets["intermediate_size"], targets["num_attention_heads"])
    assert type(folded) is BertForSequenceClassification and folded.backend is wid.backend
    np.testing.assert_allclose(_logits(folded), _logits(wid), atol=1e-9, rtol=0)
    # hidden states: the folded ones are the kept dimensions of the compacted ones
    kept = wid.groups["residual"].kept()
    hw = wid(IDS, MASK, output_hidden_states=True).hidden_states
    hf = folded(IDS, MASK, output_hidden_states=True).hidden_states
    for a, b in zip(hw, hf):
        np.testing.assert_allclose(b.numpy(), a.numpy()[..., kept], atol=1e-9, rtol=0)
    assert report.max_residual == 0.0 and report.params_after == folded.num_parameters()
    assert folded.num_parameters() < teacher.num_parameters()


def test_fold_reports_what_masked_entries_still_carried():
    wid = WIDModel(toy_teacher(), WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    randomise(wid)
    wid.prune_to_target()
    expected = wid.masked_residual()
    before = _logits(wid)
    folded, report = fold(wid, return_report=True)
    assert expected > 0.1 and report.max_residual == pytest.approx(expected)
    np.testing.assert_array_equal(_logits(wid), before)  # fold never mutates its input
    assert not wid.state.hard
    wid.harden()
    np.testing.assert_allclose(_logits(folded), _logits(wid), atol=1e-9, rtol=0)


def test_fold_of_a_bare_bert_model():
    teacher = toy_teacher(BertModel)
    wid = WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    randomise(wid)
    wid.prune_to_target()
    wid.harden()
    folded = fold(wid)
    kept = wid.groups["residual"].kept()
    a, b = wid(IDS, MASK), folded(IDS, MASK)
    np.testing.assert_allclose(b.last_hidden_state.numpy(), a.last_hidden_state.numpy()[..., kept], atol=1e-9, rtol=0)
    np.testing.assert_allclose(b.pooler_output.numpy(), a.pooler_output.numpy()[..., kept], atol=1e-9, rtol=0)


@pytest.mark.torch
def test_folded_model_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    wid = WIDModel(toy_teacher(dtype="float32"), WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
    wid.eval()
    randomise(wid, scale=0.1)
    wid.prune_to_target()
    wid.harden()
    folded = fold(wid)
    folded.save_pretrained(tmp_path / "folded")
    hf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "folded"),
                                                                     attn_implementation="eager").eval()
    assert hf.config.hidden_size == 8 and hf.config.intermediate_size == 12 and hf.config.num_attention_heads == 2
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    np.testing.assert_allclose(theirs, _logits(folded), atol=1e-5, rtol=0)
    np.testing.assert_allclose(theirs, _logits(wid), atol=1e-5, rtol=0)


@pytest.mark.slow  # 13 s and more; the fold and forward tests below cover WID in the fast loop
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_compactor_gradcheck(name):
    with md.use_backend(name):
        _compactor_gradcheck()


def _compactor_gradcheck():
    wid = WIDModel(toy_teacher(), WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    randomise(wid, scale=0.1)
    wid.prune_round(4)  # masks partly grown: masked LayerNorm statistics are in play
    assert wid.groups["residual"].active
    labels = np.array([0, 2, 1])
    layer0 = wid.model.bert.encoder.layer[0]
    params = [wid.model.bert.embeddings.LayerNorm.compactor, layer0.attention.self.query.row_compactor,
              layer0.intermediate.dense.col_compactor, layer0.output.dense.row_compactor,
              layer0.output.LayerNorm.weight, wid.model.classifier.col_compactor]
    assert md.gradcheck(lambda *_: wid(IDS, MASK, labels=labels).loss, *params, atol=1e-6, rtol=1e-4)


def test_schedule_reaches_exactly_the_targets_and_masks_only_grow():
    cfg = WIDConfig(hidden_size=8, intermediate_size=10, num_attention_heads=2, w_step=3, rounds=4)
    wid = WIDModel(toy_teacher(), cfg)
    randomise(wid)
    seen, prev = [], {k: g.keep.copy() for k, g in wid.groups.items()}
    for step in range(1, cfg.hard_step + 1):
        wid.on_step(step)
        for k, g in wid.groups.items():
            assert np.all(g.keep <= prev[k])  # never un-masked
            prev[k] = g.keep.copy()
        seen.append(wid.widths()["residual"])
    assert wid.widths() == {"residual": 8, "qkv.0": 8, "ffn.0": 10, "qkv.1": 8, "ffn.1": 10}
    assert sorted(set(seen)) == [8, 10, 12, 14, 16]  # 2 dims per round over 4 rounds
    for i in range(2):  # whole heads: 2 of 4 heads kept, each with all 4 dims
        per_head = wid.groups[f"qkv.{i}"].keep.reshape(4, 4).sum(1)
        assert sorted(per_head) == [0, 0, 4, 4]
    assert wid.state.hard and wid.masked_residual() == 0.0


def test_pruning_masks_the_smallest_norms():
    wid = WIDModel(toy_teacher(), WIDConfig(hidden_size=12, intermediate_size=24, num_attention_heads=4))
    lin = wid.model.bert.encoder.layer[0].output.dense  # its row compactor is on the residual stream
    r = lin.row_compactor.numpy()
    r[[3, 5, 6, 9]] *= 0.01  # four residual dims made weakest
    lin.row_compactor.data = lin.row_compactor.backend.asarray(r)
    wid.prune_to_target()
    assert list(np.flatnonzero(wid.groups["residual"].keep == 0)) == [3, 5, 6, 9]


def test_masked_entries_decay_and_training_runs_the_schedule(tok_tiny):
    tokenizer, data = tok_tiny
    cfg = WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2, w_step=2, rounds=2, compactor_lr=1e-2)
    teacher = toy_teacher(dtype="float32", vocab_size=tokenizer.vocab_size, max_position_embeddings=32, num_labels=2)
    wid = WIDModel(teacher, cfg)
    trainer = Trainer(wid, tokenizer, data, None, TrainConfig(lr=1e-3, max_steps=cfg.hard_step + 2, batch_size=4,
                                                              max_length=16, progress=False), callbacks=wid.callbacks())
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == pytest.approx([1e-2 / 24, 1e-2 / 16, 1e-3])  # compactors: own rate / width
    trainer.train()
    assert wid.state.hard and wid.widths()["residual"] == 8 and wid.masked_residual() == 0.0
    assert [h["round"] for h in wid.history] == [1, 2]
    folded = fold(wid.eval())
    np.testing.assert_allclose(folded(IDS, MASK).logits.numpy(), wid(IDS, MASK).logits.numpy(), atol=1e-5)


@pytest.fixture
def tok_tiny(minilm_path):
    from minidistill.data import TextDataset, Tokenizer

    texts = [f"a {w} film, {v}" for w in ("fine", "dull", "great", "bad") for v in ("truly", "sadly", "oddly", "very")]
    return Tokenizer.from_pretrained(minilm_path), TextDataset(texts, labels=np.arange(16) % 2)


def test_bad_targets_and_folds_raise_clear_errors():
    teacher = toy_teacher()
    with pytest.raises(ValueError, match="hidden_size=32 must lie in"):
        WIDModel(teacher, WIDConfig(hidden_size=32))
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        WIDModel(teacher, WIDConfig(hidden_size=8, num_attention_heads=3))
    with pytest.raises(ValueError, match="head size 8 exceeds"):
        WIDModel(teacher, WIDConfig(hidden_size=16, num_attention_heads=2))
    with pytest.raises(ValueError, match="w_step"):
        WIDConfig(w_step=0)
    with pytest.raises(TypeError, match="a BERT task model .sentence, token, QA or masked-LM head. or a BertModel, got CompactedLinear"):
        WIDModel(CompactedLinear.__new__(CompactedLinear))
    wid = WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
    wid.groups["ffn.0"].keep[:3] = 0.0  # one layer pruned further than the other
    with pytest.raises(ValueError, match="FFN widths differ"):
        fold(wid)


def test_fold_of_a_model_with_nothing_to_fold_returns_a_copy_and_says_so():
    teacher = toy_teacher()
    with pytest.warns(UserWarning, match="nothing to fold"):
        copy, report = fold(teacher, return_report=True)
    assert copy is not teacher and report.rules == [] and report.params_after == report.params_before
    np.testing.assert_array_equal(_logits(copy), _logits(teacher))
    copy.classifier.weight.data = copy.classifier.weight.data * 0
    assert np.abs(teacher.classifier.weight.numpy()).sum() > 0  # no shared memory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fold(WIDModel(teacher, WIDConfig()))  # identity WID folds without complaint


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fold_of_a_masked_lm_keeps_the_head_and_the_tie(backend):
    """WID of a BertForMaskedLM: the decoder reads the words through the embedding compactor,
    so the folded BertForMaskedLM (its decoder tied to the folded table) gives the hard-masked
    model's logits over the vocabulary (1e-9, float64); the transform is compacted too."""
    from minidistill.models import BertForMaskedLM

    with md.use_backend(backend):
        teacher = toy_teacher(BertForMaskedLM)
    wid = WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    assert wid(IDS, MASK).logits.shape == (*IDS.shape, teacher.config.vocab_size)
    randomise(wid)
    wid.prune_to_target()
    wid.harden()
    folded = fold(wid)
    assert type(folded) is BertForMaskedLM and folded.config.hidden_size == 8
    assert folded.cls.predictions.decoder.weight is folded.bert.embeddings.word_embeddings.weight
    np.testing.assert_allclose(folded(IDS, MASK).logits.numpy(), wid(IDS, MASK).logits.numpy(), atol=1e-9, rtol=0)
    # the decoder is the compacted word table: moving it moves both ends of the model
    names = [n for n, _ in wid.named_parameters()]
    assert "model.cls.predictions.transform.dense.row_compactor" in names
    assert "model.cls.predictions.transform.dense.col_compactor" in names


@pytest.mark.torch
def test_folded_masked_lm_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch
    from minidistill.models import BertForMaskedLM

    wid = WIDModel(toy_teacher(BertForMaskedLM, dtype="float32"),
                   WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
    randomise(wid, scale=0.1)
    wid.prune_to_target()
    wid.harden()
    folded = fold(wid)
    folded.save_pretrained(tmp_path / "folded")
    hf = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "folded"), attn_implementation="eager").eval()
    assert hf.config.hidden_size == 8
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    np.testing.assert_allclose(theirs, folded(IDS, MASK).logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(theirs, wid(IDS, MASK).logits.numpy(), atol=1e-5, rtol=0)
