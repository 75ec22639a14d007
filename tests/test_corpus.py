"""Raw-text corpora: the token cache (resumable to identical files, refusing another tokenizer or
other files) and packing (no token lost, no document crossed unless asked, masks from
(seed, step))."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minidistill.data import Tokenizer
from minidistill.data.corpus import CorpusCache, PackedCorpus, iter_documents
from minidistill.data.masking import MaskingCollator
from minidistill.fileio import CheckpointError

DOCS = ["The first document has a few words. It spans two lines.",
        "The second one is short.",
        "A third document, with more words than fit in one small sequence of tokens, and then some more."] * 7


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(d.replace(". ", ".\n", 1) for d in DOCS[:12]) + "\n", encoding="utf-8")
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in DOCS[12:]) + "\n", encoding="utf-8")
    return folder


def test_documents_are_read_in_order(corpus):
    assert list(iter_documents(corpus)) == DOCS


def test_packing_loses_no_token_and_crosses_no_document(corpus, tok, tmp_path):
    cache = CorpusCache.build(tmp_path / "cache", tok, corpus)
    tokens, ends = np.asarray(cache.tokens), np.asarray(cache.doc_ends)
    assert len(ends) == len(DOCS) and ends[-1] == len(tokens)
    want = [np.asarray(ids) for ids, _ in tok.encode_words([d.split() for d in DOCS])]
    np.testing.assert_array_equal(tokens, np.concatenate(want))
    packed = PackedCorpus(cache, tok, seq_len=10)
    bodies = [packed.sequence(i)[1:-1] for i in range(len(packed))]
    np.testing.assert_array_equal(np.concatenate(bodies), tokens)  # every token once, in order
    begins = np.concatenate([[0], ends[:-1]])
    for a, b in packed.spans:
        d = np.searchsorted(ends, a, side="right")
        assert begins[d] <= a and b <= ends[d]  # inside one document
    crossed = PackedCorpus(cache, tok, seq_len=10, cross_documents=True)
    stream = np.concatenate([crossed.sequence(i)[1:-1] for i in range(len(crossed))])
    joined = np.concatenate([np.concatenate([w, [tok.sep_token_id]]) for w in want])[:-1]
    np.testing.assert_array_equal(stream, joined)  # documents joined by [SEP], nothing lost
    assert all(len(crossed.sequence(i)) == 10 for i in range(len(crossed) - 1))  # full sequences


def test_an_interrupted_build_resumes_to_identical_files(corpus, tok, tmp_path):
    whole = CorpusCache.build(tmp_path / "whole", tok, corpus, chunk_docs=4)

    class Killed(Exception):
        pass

    def kill(done):
        if done >= 8:
            raise Killed

    with pytest.raises(Killed):
        CorpusCache.build(tmp_path / "part", tok, corpus, chunk_docs=4, _after_chunk=kill)
    with open(tmp_path / "part" / "tokens.i32", "ab") as f:  # a chunk half-written after the last meta.json
        f.write(b"\x07" * 12)
    assert not json.loads((tmp_path / "part" / "meta.json").read_text())["complete"]
    resumed = CorpusCache.build(tmp_path / "part", tok, corpus, chunk_docs=4)
    for name in ("tokens.i32", "docs.i64"):
        assert (tmp_path / "part" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert resumed.meta == whole.meta
    resumed.check(tok, corpus)


def test_another_tokenizer_or_changed_files_are_refused(corpus, tok, tmp_path, minilm_path):
    CorpusCache.build(tmp_path / "c", tok, corpus)
    (corpus / "b.jsonl").write_text(json.dumps({"text": "something else entirely"}) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="other files"):
        CorpusCache.build(tmp_path / "c", tok, corpus)
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a"])}
    hf = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    with pytest.raises(CheckpointError, match="another tokenizer"):
        CorpusCache.build(tmp_path / "c", Tokenizer(hf), corpus)


def test_masked_batches_follow_seed_and_step(corpus, tok, tmp_path):
    cache = CorpusCache.build(tmp_path / "cache", tok, corpus)
    packed = PackedCorpus(cache, tok, seq_len=12, masking=MaskingCollator(tok, seed=5))
    assert packed.labels == "masked-lm"
    full = list(packed.batches(tok, 4, 12, shuffle=True, seed=1, epoch=2))
    resumed = list(packed.batches(tok, 4, 12, shuffle=True, seed=1, epoch=2, skip=3))
    for a, b in zip(full[3:], resumed):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert any((b["labels"] != -100).any() for b in full)
    with pytest.raises(ValueError, match="shorter"):
        next(packed.batches(tok, 4, 8))
