"""Every compression method with token-classification and QA heads: students keep the head,
fold / unroll stay exact (1e-9 in float64), transformers loads the folded students with the same
logits, the per-token BiLSTM, and a token student distilled from a teacher to full agreement."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.compress import (HardKD, SoftKD, TheseusModel, WIDConfig, WIDModel, distill, fold, make_bilstm_student,
                                  make_minialbert, make_student, xtremedistil_stages)
from minidistill.models import BertForQuestionAnswering, BertForTokenClassification
from minidistill.models.bert import head_kind

from .conftest import IDS, MASK, randomise, toy_teacher

HEADS = {"token": BertForTokenClassification, "qa": BertForQuestionAnswering}


def _out(model, ids=IDS, mask=MASK):
    with md.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return out.logits.numpy()  # (B, T, C) tags, or (B, T, 2) start / end


@pytest.mark.parametrize("kind", list(HEADS))
def test_students_of_every_method_keep_the_teacher_head(kind):
    teacher = toy_teacher(HEADS[kind], num_hidden_layers=4)
    c = teacher.config.num_labels if kind == "token" else 2
    students = {
        "transformer": make_student(teacher, 2),
        "wid": WIDModel(teacher, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)),
        "theseus": TheseusModel(teacher, 2),
        "minialbert": make_minialbert(teacher, embedding_size=8, adapter_reduction=4),
    }
    for name, student in students.items():
        assert head_kind(student) == kind, name
        assert _out(student.eval()).shape == (3, 7, c), name
    # lower-layer init copies the head itself
    s = students["transformer"]
    for n in teacher.head_parameter_names():
        np.testing.assert_array_equal(s.state_dict()[n], teacher.state_dict()[n])


@pytest.mark.parametrize("kind", list(HEADS))
def test_wid_fold_is_exact_for_token_and_qa_heads(kind):
    wid = WIDModel(toy_teacher(HEADS[kind]), WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
    wid.eval()
    randomise(wid)
    wid.prune_to_target()
    wid.harden()
    folded = fold(wid)
    assert type(folded) is HEADS[kind] and folded.config.hidden_size == 8
    np.testing.assert_allclose(_out(folded), _out(wid), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", list(HEADS))
def test_theseus_trains_any_head_and_folds_to_the_successor(kind):
    teacher = toy_teacher(HEADS[kind], num_hidden_layers=4)
    model = TheseusModel(teacher, 2)
    model.train()
    model.p = 0.5
    if kind == "token":
        labels = np.where(MASK == 1, IDS % 3, -100)
    else:
        labels = np.array([[1, 3], [2, 2], [0, 0]])
    out = model(input_ids=IDS, attention_mask=MASK, labels=labels)
    out.loss.backward()  # the mixed forward reaches the successor's head
    assert any(p.grad is not None for p in model.successor.parameters())
    model.eval()
    folded = fold(model)
    assert type(folded) is HEADS[kind]
    np.testing.assert_allclose(_out(folded), _out(model), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", list(HEADS))
def test_minialbert_unrolls_exactly_with_token_and_qa_heads(kind):
    student = make_minialbert(toy_teacher(HEADS[kind]), embedding_size=8, adapter_reduction=4)
    randomise(student, scale=0.1)
    student.eval()
    unrolled = fold(student, unroll=True)
    assert type(unrolled) is HEADS[kind]
    np.testing.assert_allclose(_out(unrolled), _out(student), atol=1e-9, rtol=0)


@pytest.mark.torch
@pytest.mark.parametrize("method", ["wid", "theseus"])
@pytest.mark.parametrize("kind", list(HEADS))
def test_folded_token_and_qa_students_load_in_transformers(tmp_path, kind, method):
    transformers = pytest.importorskip("transformers")
    import torch

    if method == "wid":
        wid = WIDModel(toy_teacher(HEADS[kind], dtype="float32"),
                       WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2)).eval()
        randomise(wid, scale=0.1)
        wid.prune_to_target()
        wid.harden()
        folded = fold(wid)
    else:
        theseus = TheseusModel(toy_teacher(HEADS[kind], dtype="float32", num_hidden_layers=4), 2)
        randomise(theseus.successor, scale=0.1)
        folded = fold(theseus.eval())
    folded.save_pretrained(tmp_path / kind)
    cls = {"token": transformers.BertForTokenClassification, "qa": transformers.BertForQuestionAnswering}[kind]
    hf = cls.from_pretrained(str(tmp_path / kind), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK))
    theirs = ref.logits.numpy() if kind == "token" else np.stack([ref.start_logits.numpy(), ref.end_logits.numpy()], -1)
    np.testing.assert_allclose(theirs, _out(folded), atol=1e-5, rtol=0)


def test_per_token_bilstm_student():
    teacher = toy_teacher(BertForTokenClassification, num_hidden_layers=4)
    student = make_bilstm_student(teacher, hidden_size=6)
    assert student.config.task == "token"
    student.eval()
    logits = _out(student)
    assert logits.shape == (3, 7, teacher.config.num_labels)
    # a real token's logits do not depend on the padding after the sentence
    ids2 = np.concatenate([IDS, np.zeros((3, 2), dtype=IDS.dtype)], 1)
    logits2 = _out(student, ids2, (ids2 != 0).astype(np.int64))
    np.testing.assert_allclose(logits2[:, :7][MASK == 1], logits[MASK == 1], atol=1e-12)
    stages = xtremedistil_stages(student, teacher)
    first = stages[0].objectives[0]
    assert first.layer_map.pairs == ((2, 2),) and first.tokens == "all"  # r ↔ the middle teacher layer
    with md.no_grad():
        s_out = student(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
        t_out = teacher(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    assert np.isfinite(first(s_out, t_out, {"attention_mask": MASK}).item())
    with pytest.raises(ValueError, match="qa head"):
        make_bilstm_student(toy_teacher(BertForQuestionAnswering))


def test_token_student_distilled_to_full_agreement(minilm_path):
    """A 2-layer token student learns a 4-layer tagging teacher's labels on every word."""
    from minidistill.data import TaskSpec, Tokenizer, TokenDataset

    tok = Tokenizer.from_pretrained(minilm_path)
    md.manual_seed(0)
    from minidistill.models import BertConfig

    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = BertForTokenClassification(cfg).eval()
    randomise(teacher, seed=3, scale=0.2)
    rng = np.random.default_rng(0)
    vocab = ["paris", "london", "river", "bank", "john", "smith", "went", "to", "the", "city", "of", "lights"]
    words = [list(rng.choice(vocab, size=rng.integers(3, 8))) for _ in range(48)]
    task = TaskSpec("toy-ner", "tokens", None, "tags", ("O", "B-X", "I-X"), ("f1",), kind="token", scheme="BIO")
    data = TokenDataset(words, None, task)
    student = make_student(teacher, 2)
    cfg_train = md.train.TrainConfig(epochs=60, batch_size=16, lr=5e-3, max_length=16, eval_every=None,
                                     warmup_ratio=0.0, progress=False)
    # hard KD on the teacher's tag of every word (soft KD also gets there but for one word the
    # random teacher is torn about: its two best logits 0.01 apart)
    distill(teacher, student, tok, data, objectives=[HardKD()], config=cfg_train)
    agree = total = 0
    with md.no_grad():
        for batch in data.batches(tok, 16, 16):
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            t, s = teacher(**inputs).logits.numpy().argmax(-1), student.eval()(**inputs).logits.numpy().argmax(-1)
            words_at = batch["token_mask"] == 1
            agree += int((t == s)[words_at].sum())
            total += int(words_at.sum())
    assert total > 200 and agree == total


@pytest.mark.parametrize("kind", list(HEADS))
def test_teacher_cache_serves_token_and_qa_logits(tmp_path, minilm_path, kind):
    """A cached tagging / QA teacher gives the live teacher's logits on every window (and the
    distillation loss is the same from either)."""
    from minidistill.compress.distill import _teacher_outputs
    from minidistill.data import QADataset, QAExample, TaskSpec, TokenDataset, Tokenizer
    from minidistill.models import BertConfig

    tok = Tokenizer.from_pretrained(minilm_path)
    md.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=64, num_labels=3)
    teacher = HEADS[kind](cfg).eval()
    if kind == "token":
        task = TaskSpec("t", "tokens", None, "tags", ("O", "B-X", "I-X"), ("f1",), kind="token", scheme="BIO")
        data = TokenDataset([["a", "long", "sentence", "of", "words"] * 6, ["short", "one"]], None, task, stride=2)
    else:
        task = TaskSpec("q", "question", "context", "answers", None, ("f1",), kind="qa", scheme="squad")
        ctx = "Paris is the capital of France and the river Seine runs through it. " * 2
        data = QADataset([QAExample("1", "what runs through Paris?", ctx, (("Seine", 45),))], task, doc_stride=4)
    config = md.train.TrainConfig(max_length=20, eval_batch_size=2)
    cached = _teacher_outputs(teacher, tok, data, [SoftKD()], config, tmp_path / "cache")
    live = _teacher_outputs(teacher, tok, data, [SoftKD()], config, None)
    n = 0
    for batch in data.batches(tok, 3, 20):
        a, b = cached(batch), live(batch)
        m = batch["attention_mask"] == 1
        np.testing.assert_allclose(a.logits.numpy()[m], b.logits.numpy()[m], atol=1e-6)
        n += len(batch["input_ids"])
    assert n > len(data)  # long examples became several windows, each cached


@pytest.mark.parametrize("kind", list(HEADS))
def test_compacter_trains_adapters_and_the_token_or_qa_head(kind):
    from minidistill.compress import compacter

    model = toy_teacher(HEADS[kind], dtype="float32")
    before = _out(model)
    compacter(model, reduction=4, n=2)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    head = set(model.head_parameter_names())
    assert head <= trained  # the head of the task trains with the adapters
    assert not any(n.startswith("bert.encoder.layer.0.attention.self.") for n in trained)
    np.testing.assert_allclose(_out(model), before, atol=1e-5)  # adapters start as identities


def test_distill_a_bare_encoder_without_labels(minilm_path):
    """Task-agnostic distillation's plumbing: a BertModel student learns a BertModel teacher's
    last hidden states on unlabelled text (no labels passed anywhere)."""
    from minidistill.compress import HiddenMSE, LayerMap
    from minidistill.data import TextDataset, Tokenizer
    from minidistill.models import BertConfig, BertModel

    tok = Tokenizer.from_pretrained(minilm_path)
    md.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=32)
    teacher = BertModel(cfg).eval()
    randomise(teacher, seed=2, scale=0.3)  # layers that change the states a lot
    student = make_student(teacher, 1, init="random")
    texts = TextDataset(["raw text without any label", "another plain sentence", "and a third one"] * 4)
    objective = HiddenMSE(LayerMap.build("last", 1, 2), 16, 16)
    batch = next(texts.batches(tok, 12, 16))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with md.no_grad():
        before = objective(student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True),
                           batch).item()
    distill(teacher, student, tok, texts, objectives=[objective],
            config=md.train.TrainConfig(max_steps=30, batch_size=12, lr=3e-3, max_length=16, progress=False,
                                        warmup_ratio=0.0))
    student.eval()
    with md.no_grad():
        after = objective(student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True),
                          batch).item()
    assert after < 0.5 * before
