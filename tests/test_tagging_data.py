"""Token-labelled files and SQuAD files: readers, word → first-sub-word alignment with windows,
answer spans, and the entity / SQuAD metrics against seqeval and torchmetrics' port of the
official SQuAD script."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidistill.data import (DataError, entities, load_squad_file, load_tagged_file, read_conll,
                              read_token_jsonl)
from minidistill.train import metrics

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
Britishhhhh JJ B-NP B-MISC
lamb NN I-NP O
. . O O


Peter NNP B-NP B-PER
Blackburnnnnnnn NNP I-NP I-PER
-DOCSTART- -X- -X- O
Brussels NNP B-NP B-LOC
"""


@pytest.fixture
def conll(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL, encoding="utf-8")
    return path


def test_conll_reader_skips_docstart_and_blank_lines(conll):
    sentences, tags = read_conll(conll)
    assert sentences == [["EU", "rejects", "German", "call", "to", "boycott", "Britishhhhh", "lamb", "."],
                         ["Peter", "Blackburnnnnnnn"], ["Brussels"]]
    assert tags[1] == ["B-PER", "I-PER"] and tags[2] == ["B-LOC"]
    # another tag column: the chunk tags
    assert read_conll(conll, tag_column=2)[1][0][:2] == ["B-NP", "B-VP"]


@pytest.mark.parametrize("max_length", [5, 6, 8, 64])
@pytest.mark.parametrize("stride", [0, 2, 32])
def test_every_word_is_labelled_once_on_its_first_subword(conll, tok, max_length, stride):
    data = load_tagged_file(conll)
    data.stride = stride
    windows = data.encode(tok, max_length)
    pieces = tok.encode_words(data.words)
    seen = {}
    for ids, _, labels, word_index, first in windows:
        assert len(ids) <= max_length and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert labels[0] == labels[-1] == -100
        for k in np.nonzero(labels != -100)[0]:
            s, w = word_index[k]
            key = (int(s), int(w))
            assert key not in seen, f"word {key} labelled twice"
            seen[key] = int(labels[k])
            # the label sits on the word's first sub-word
            sub_ids, word_ids = pieces[s]
            first_pos = word_ids.index(w)
            assert ids[k] == sub_ids[first_pos]
    expected = {(s, w): int(t) for s, tags in enumerate(data.tags) for w, t in enumerate(tags)}
    assert seen == expected
    if max_length == 5:  # the long sentence really was split
        assert len(windows) > len(data)


def test_batches_pad_labels_with_ignore_index(conll, tok):
    data = load_tagged_file(conll)
    batch = next(data.batches(tok, batch_size=3, max_length=64))
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["token_mask"][batch["labels"] != -100] == 1).all()
    assert data.num_batches(2, tok, 64) == 2


def test_bad_tags_name_file_sentence_and_token(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("John B-PER\nlives O\n\nin O\nParis X-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll, sentence 2 \(line 4\), token 2: tag 'X-LOC' is not a BIO tag"):
        read_conll(bad)
    strict = tmp_path / "strict.conll"
    strict.write_text("in O\nParis I-LOC\n", encoding="utf-8")
    read_conll(strict)  # conlleval's reading: I- after O opens an entity
    with pytest.raises(DataError, match="token 2: tag 'I-LOC' continues an entity that was not opened"):
        read_conll(strict, strict=True)
    bioes = tmp_path / "bioes.conll"
    bioes.write_text("New B-LOC\nYork E-LOC\nis O\nbig S-MISC\n", encoding="utf-8")
    assert read_conll(bioes, scheme="BIOES")[1][0] == ["B-LOC", "E-LOC", "O", "S-MISC"]
    with pytest.raises(DataError, match="not a BIO tag"):
        read_conll(bioes)
    with pytest.raises(DataError, match="column"):
        read_conll(bioes, tag_column=3)


def test_jsonl_reader(tmp_path):
    path = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["Ann", "sings"], "tags": [1, 0]}, {"tokens": ["Bo"], "tags": [1]}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    sentences, tags = read_token_jsonl(path, labels=["O", "B-PER"])
    assert sentences == [["Ann", "sings"], ["Bo"]] and tags == [["B-PER", "O"], ["B-PER"]]
    with pytest.raises(DataError, match="tags are ids"):
        read_token_jsonl(path)
    path.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}), encoding="utf-8")
    with pytest.raises(DataError, match="line 1: 2 tokens but 1 tags"):
        read_token_jsonl(path)


# ------------------------------------------------------------------ entity metric
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC", "E-LOC", "S-PER"]
bio = st.lists(st.lists(st.sampled_from(TAGS[:5]), min_size=0, max_size=12), min_size=1, max_size=6)
bioes = st.lists(st.lists(st.sampled_from(TAGS), min_size=0, max_size=12), min_size=1, max_size=6)


def _pairs(draw_from):
    return st.integers(0, 2**31 - 1).flatmap(lambda seed: draw_from.map(lambda gold: (gold, _perturb(gold, seed))))


def _perturb(gold, seed):
    rng = np.random.default_rng(seed)
    pool = sorted({t for s in gold for t in s} | {"O", "B-PER", "I-LOC"})
    return [[t if rng.random() < 0.6 else pool[rng.integers(len(pool))] for t in s] for s in gold]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # seqeval's own mean of an empty report
@settings(max_examples=150, deadline=None)
@given(_pairs(bio) | _pairs(bioes))
def test_entity_scores_equal_seqeval(pair):
    seqeval = pytest.importorskip("seqeval.metrics")
    gold, pred = pair
    ours = metrics.entity_scores(pred, gold)
    assert abs(ours["precision"] - seqeval.precision_score(gold, pred, zero_division=0)) < 1e-12
    assert abs(ours["recall"] - seqeval.recall_score(gold, pred, zero_division=0)) < 1e-12
    assert abs(ours["f1"] - seqeval.f1_score(gold, pred, zero_division=0)) < 1e-12
    report = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
    for kind, row in ours["per_type"].items():
        if kind in report:
            assert abs(row["f1"] - report[kind]["f1-score"]) < 1e-12
            assert row["support"] == report[kind]["support"]
    words = sum(len(s) for s in gold)
    if words:
        assert ours["token_accuracy"] == sum(a == b for p, g in zip(pred, gold) for a, b in zip(p, g)) / words


def test_entity_edge_cases():
    assert entities(["I-PER", "I-PER", "O", "I-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]  # I- without B-
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # a type change closes
    assert entities(["B-LOC", "E-LOC", "S-PER"]) == [("LOC", 0, 1), ("PER", 2, 2)]
    empty = metrics.entity_scores([["O", "O"]], [["B-PER", "O"]])
    assert empty["precision"] == empty["recall"] == empty["f1"] == 0.0 and empty["token_accuracy"] == 0.5


# -------------------------------------------------------------------- SQuAD
words = st.sampled_from(["the", "a", "Paris", "paris", "city", "of", "light", "An", "old", "1976", "42", "."])
answer = st.lists(words, min_size=0, max_size=6).map(" ".join) | st.sampled_from(["", "The.", "  Paris , city!"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(answer, st.lists(answer, min_size=1, max_size=3)), min_size=1, max_size=8))
def test_squad_scores_equal_the_official_rules(cases):
    tm = pytest.importorskip("torchmetrics.functional.text")
    cases = [(p, [g for g in golds if g.strip()] or ["x"]) for p, golds in cases]  # v1.1: every question answered
    preds = [{"prediction_text": p, "id": str(i)} for i, (p, _) in enumerate(cases)]
    target = [{"answers": {"answer_start": [0] * len(g), "text": g}, "id": str(i)} for i, (_, g) in enumerate(cases)]
    ref = tm.squad(preds, target)
    ours = metrics.squad_scores([p for p, _ in cases], [g for _, g in cases], version_2=False)
    assert abs(ours["exact_match"] - float(ref["exact_match"])) < 1e-4
    assert abs(ours["f1"] - float(ref["f1"])) < 1e-4


def test_squad_v2_no_answer_rules():
    scores = metrics.squad_scores(["", "Paris", "", "the city"], [[], [], ["Paris"], ["The City!"]])
    # v2.0's script drops gold answers that normalise to nothing; v1.1's keeps them
    assert metrics.squad_scores([""], [["the", "Paris"]], version_2=True)["exact_match"] == 0.0
    assert metrics.squad_scores([""], [["the", "Paris"]], version_2=False)["exact_match"] == 100.0
    # right: the empty answer to a question without one, and the normalised match
    assert scores["exact_match"] == 50.0 and scores["f1"] == 50.0
    assert scores["NoAns_exact"] == 50.0 and scores["HasAns_exact"] == 50.0
    assert metrics.squad_f1("Paris city", "the city of light") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


# ------------------------------------------------------------------ SQuAD files
SQUAD = {"version": "v2.0", "data": [{"title": "Paris", "paragraphs": [{
    "context": "Paris is the capital of France. It is known as the city of light, and it hosted the "
               "Olympic Games in 1900, 1924 and 2024. The river Seine runs through it.",
    "qas": [{"id": "q1", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]},
            {"id": "q2", "question": "Which river runs through Paris?",
             "answers": [{"text": "Seine", "answer_start": 132}, {"text": "The river Seine", "answer_start": 122}]},
            {"id": "q3", "question": "Who founded Paris?", "answers": [], "is_impossible": True}]}]}]}


@pytest.fixture
def squad(tmp_path):
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    return path


@pytest.mark.parametrize("max_length,stride", [(24, 4), (32, 8), (128, 32)])
def test_squad_windows_map_answers_to_tokens(squad, tok, max_length, stride):
    data = load_squad_file(squad)
    data.doc_stride = stride
    assert data.version_2 and len(data) == 3
    windows = data.encode(tok, max_length)
    per_question = {i: [] for i in range(len(data))}
    for ids, _, (a, b), offsets, i in windows:
        assert len(ids) <= max_length
        ex = data.examples[i]
        per_question[i].append((a, b))
        if (a, b) == (0, 0):
            continue
        text, start = ex.answers[0]
        assert ex.context[offsets[a][0]:offsets[b][1]] == text
    assert any(t != (0, 0) for t in per_question[0]) and any(t != (0, 0) for t in per_question[1])
    assert all(t == (0, 0) for t in per_question[2])
    # oracle logits: peaked on each window's target; the post-processing recovers the answers
    width = max(len(w[0]) for w in windows)
    start = np.full((len(windows), width), -5.0)
    end = np.full((len(windows), width), -5.0)
    for w, (_, _, (a, b), _, _) in enumerate(windows):
        start[w, a] += 10 if (a, b) != (0, 0) else 3
        end[w, b] += 10 if (a, b) != (0, 0) else 3
    answers = data.predictions(start, end, tok, max_length)
    assert [a for a, _ in answers] == ["Paris", "Seine", ""]
    gold = [[t for t, _ in e.answers] for e in data.examples]
    assert metrics.squad_scores([a for a, _ in answers], gold)["exact_match"] == 100.0


def test_squad_reader_checks_answers(tmp_path):
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(DataError, match="question 'q1': answer 'Paris' is not at character 3"):
        load_squad_file(path)
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="not a SQuAD file"):
        load_squad_file(path)


def test_a_window_too_small_for_the_question_is_a_clear_error(squad, tok):
    data = load_squad_file(squad)
    data.doc_stride = 8
    with pytest.raises(DataError, match="question 1 takes 7 tokens: max_length 16 leaves 6 for the context"):
        data.encode(tok, 16)
