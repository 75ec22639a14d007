"""The masked-LM collator: 15% of the non-special tokens over many draws (± 3σ), 80/10/10 of
those, never a special or padded position, the same draw for the same (seed, step), and whole
words masked together."""

from __future__ import annotations

import numpy as np
import pytest

from minidistill.data.masking import MaskingCollator, whole_words


@pytest.fixture(scope="module")
def batch(tok):
    texts = ["Distillation transfers a teacher's knowledge into a smaller student network.",
             "Unbelievably, the tokenizer splits uncommon words into several pieces.",
             "Short one."] * 40
    return tok.encode(texts)


def test_rates_over_many_draws(tok, batch):
    coll = MaskingCollator(tok, seed=3)
    ids, att = batch["input_ids"], batch["attention_mask"] == 1
    special = np.isin(ids, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    n_cand = int((att & ~special).sum())
    chosen = masked = randomised = kept = 0
    steps = 60
    for step in range(steps):
        out = coll(batch, step)
        sel = out["labels"] != -100
        assert not (sel & (special | ~att)).any()  # never a special or padded position
        np.testing.assert_array_equal(out["labels"][sel], ids[sel])  # labels: the original ids
        chosen += int(sel.sum())
        masked += int((out["input_ids"][sel] == tok.mask_token_id).sum())
        same = out["input_ids"][sel] == ids[sel]
        kept += int(same.sum())
        randomised += int((~same & (out["input_ids"][sel] != tok.mask_token_id)).sum())
        np.testing.assert_array_equal(out["input_ids"][~sel], ids[~sel])  # nothing else changes
    n = n_cand * steps
    sigma = np.sqrt(0.15 * 0.85 / n)
    assert abs(chosen / n - 0.15) < 3 * sigma
    for share, want in ((masked, 0.8), (randomised + kept, 0.2)):
        s = np.sqrt(want * (1 - want) / chosen)
        assert abs(share / chosen - want) < 3 * s
    # a random replacement may draw the original token (1 in 30,000, as BERT's may)
    assert abs(kept / chosen - 0.1) < 3 * np.sqrt(0.1 * 0.9 / chosen) + 0.001


def test_same_seed_and_step_same_draw(tok, batch):
    a, b = MaskingCollator(tok, seed=1), MaskingCollator(tok, seed=1)
    np.testing.assert_array_equal(a(batch, 7)["input_ids"], b(batch, 7)["input_ids"])
    assert not np.array_equal(a(batch, 7)["labels"], a(batch, 8)["labels"])
    assert not np.array_equal(a(batch, 7)["labels"], MaskingCollator(tok, seed=2)(batch, 7)["labels"])


def test_whole_words_are_masked_together(tok, batch):
    coll = MaskingCollator(tok, whole_word=True, seed=0)
    ids = batch["input_ids"]
    multi = 0
    tokens = {i: t for t, i in tok.get_vocab().items()}
    rows = [whole_words(ids[r], tokens) for r in range(len(ids))]
    for step in range(20):
        sel = coll(batch, step)["labels"] != -100
        for r in range(len(ids)):
            for word in rows[r]:
                picked = sel[r, word]
                assert picked.all() or not picked.any(), (r, word)
                multi += len(word) > 1 and picked.all()
    assert multi > 0  # words of several pieces were chosen, whole


def test_bad_settings(tok):
    with pytest.raises(ValueError, match="probability"):
        MaskingCollator(tok, probability=0.0)
    with pytest.raises(ValueError, match="sum to"):
        MaskingCollator(tok, mask_share=0.9, random_share=0.2)
