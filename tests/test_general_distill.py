"""Task-agnostic (general) distillation's plumbing: a masked-LM student learns from a masked-LM
teacher on a packed raw-text corpus, masked afresh each step — its own MLM loss, KD on the
masked positions' logits and hidden-state transfer — and a run killed after a checkpoint
resumes to the uninterrupted run's parameters, masks included."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import HiddenMSE, LayerMap, SoftKD, distill, make_student
from minidistill.data import CorpusCache, MaskingCollator, PackedCorpus, Tokenizer
from minidistill.models import BertConfig, BertForMaskedLM
from minidistill.train import TrainConfig

from .conftest import randomise


class Killed(Exception):
    pass


def _setup(tmp_path, minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    rng = np.random.default_rng(0)
    words = "the a teacher student model learns from text of many words and small sentences".split()
    (tmp_path / "corpus.txt").write_text("\n\n".join(" ".join(rng.choice(words, size=rng.integers(6, 20)))
                                                     for _ in range(40)), encoding="utf-8")
    cache = CorpusCache.build(tmp_path / "cache", tok, tmp_path / "corpus.txt")
    data = PackedCorpus(cache, tok, seq_len=16, masking=MaskingCollator(tok, seed=3))
    md.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=32, hidden_dropout_prob=0.1)
    teacher = BertForMaskedLM(cfg).eval()
    randomise(teacher, seed=1, scale=0.05)
    return tok, data, teacher


def _run(tok, data, teacher, ckpt=None, kill_at=None, resume=False):
    student = make_student(teacher, 1, seed=0)
    objectives = [SoftKD(temperature=1.0), HiddenMSE(LayerMap.build("last", 1, 2), 16, 16)]
    cfg = TrainConfig(max_steps=14, batch_size=8, lr=1e-3, max_length=16, progress=False, seed=2,
                      checkpoint_dir=ckpt, checkpoint_every=5 if ckpt else None)
    callbacks = None
    if kill_at:
        def kill(trainer):
            if trainer.state.step == kill_at:
                raise Killed
        callbacks = {"on_step_end": [kill]}
    trainer = distill(teacher, student, tok, data, objectives=objectives, task_weight=1.0, config=cfg,
                      callbacks=callbacks, resume=resume)
    return student, trainer


def test_general_distillation_learns_and_resumes_exactly(tmp_path, minilm_path):
    tok, data, teacher = _setup(tmp_path, minilm_path)
    assert data.labels == "masked-lm" and len(data) > 8
    batch = next(data.batches(tok, 16, 16))

    def mlm_loss(model):
        with md.no_grad():
            return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                labels=batch["labels"]).loss.item()

    before = mlm_loss(make_student(teacher, 1, seed=0))
    reference, _ = _run(tok, data, teacher)
    assert mlm_loss(reference) < before - 0.1  # its own masked-LM loss (on the masked positions) went down
    with pytest.raises(Killed):
        _run(tok, data, teacher, ckpt=str(tmp_path / "ckpt"), kill_at=12)
    resumed, _ = _run(tok, data, teacher, ckpt=str(tmp_path / "ckpt"), resume=True)
    ref = reference.state_dict()
    for k, v in resumed.state_dict().items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)
    # the decoder stayed tied through training and resuming
    assert resumed.cls.predictions.decoder.weight is resumed.bert.embeddings.word_embeddings.weight


def test_each_loss_term_is_logged_and_they_add_up_to_the_loss(tmp_path, minilm_path):
    """The log line of every step holds each weighted term (objectives by name, the task loss as
    ``task``); they add up to the step's loss, also over micro-batches of gradient accumulation."""
    import json

    tok, data, teacher = _setup(tmp_path, minilm_path)
    student = make_student(teacher, 1, seed=0)
    objectives = [SoftKD(temperature=1.0, weight=0.5), HiddenMSE(LayerMap.build("last", 1, 2), 16, 16),
                  HiddenMSE(LayerMap.build("last", 1, 2), 16, 16, weight=2.0)]
    log = tmp_path / "log.jsonl"
    cfg = TrainConfig(max_steps=3, batch_size=8, lr=1e-3, max_length=16, progress=False, seed=2, log_file=str(log),
                      grad_accum_steps=2)
    trainer = distill(teacher, student, tok, data, objectives=objectives, task_weight=1.0, config=cfg)
    lines = [json.loads(x) for x in log.read_text().splitlines() if '"terms"' in x]
    assert len(lines) == 3
    for rec in lines:
        assert set(rec["terms"]) == {"soft_kd", "hidden_mse.0", "hidden_mse.1", "task"}
        assert abs(sum(rec["terms"].values()) - rec["loss"]) < 1e-5 * max(1.0, abs(rec["loss"]))
        assert rec["terms"]["hidden_mse.1"] == pytest.approx(2 * rec["terms"]["hidden_mse.0"], rel=1e-5)
    assert trainer.last_terms == lines[-1]["terms"]
