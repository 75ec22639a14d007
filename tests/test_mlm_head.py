"""A masked-LM head fitted to the frozen real MiniLM-L6 encoder: only the head trains, the
encoder stays bit-identical, and masked accuracy and perplexity on held-out text improve from
the fresh head's chance level."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.data import CorpusCache, MaskingCollator, PackedCorpus, Tokenizer, load_dataset
from minidistill.models import BertForMaskedLM
from minidistill.train import TrainConfig
from minidistill.train.mlm import evaluate_masked_lm, fit_mlm_head

pytestmark = pytest.mark.checkpoint


@pytest.mark.slow  # about 40 s: 40 steps over the 30,522-word vocabulary
def test_fitted_head_beats_the_fresh_one_and_leaves_the_encoder(tmp_path, minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    texts = load_dataset("rotten_tomatoes", "train").texts
    (tmp_path / "train.txt").write_text("\n\n".join(texts[:600]), encoding="utf-8")
    (tmp_path / "held.txt").write_text("\n\n".join(texts[-120:]), encoding="utf-8")
    train = PackedCorpus(CorpusCache.build(tmp_path / "c1", tok, tmp_path / "train.txt"), tok, 48,
                         masking=MaskingCollator(tok, seed=0))
    held = PackedCorpus(CorpusCache.build(tmp_path / "c2", tok, tmp_path / "held.txt"), tok, 48,
                        masking=MaskingCollator(tok, seed=123))
    md.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(minilm_path, backend="numba")
    encoder = {k: v.copy() for k, v in model.bert.state_dict().items()}
    before = evaluate_masked_lm(model, tok, held, 32, 48)
    fit_mlm_head(model, tok, train, TrainConfig(lr=2e-3, max_steps=40, batch_size=16, max_length=48,
                                                warmup_ratio=0.0, progress=False))
    after = evaluate_masked_lm(model, tok, held, 32, 48)
    assert after["masked_tokens"] == before["masked_tokens"] > 100  # the same masks
    assert after["perplexity"] < 0.1 * before["perplexity"]
    assert after["masked_accuracy"] > before["masked_accuracy"] + 0.02  # 0 → about 5% after 40 steps
    for k, v in model.bert.state_dict().items():
        np.testing.assert_array_equal(v, encoder[k], err_msg=k)  # the encoder (and the tied table) untouched
    with pytest.raises(ValueError, match="masked data"):
        evaluate_masked_lm(model, tok, PackedCorpus(train.cache, tok, 48), 8, 48)


def test_mlm_head_command(tmp_path, capsys, tiny_teacher_dir):
    from minidistill.cli import main

    text = "\n\n".join(f"a short document number {i} about films and their music" for i in range(40))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    (tmp_path / "held.txt").write_text(text[:400], encoding="utf-8")
    out = tmp_path / "mlm"
    assert main(["mlm-head", str(tiny_teacher_dir), "--corpus", str(tmp_path / "corpus.txt"), "--held-out",
                 str(tmp_path / "held.txt"), "--steps", "3", "--seq-len", "16", "--batch-size", "8",
                 "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--backend", "numpy"]) == 0
    printed = capsys.readouterr().out
    assert "a fresh head" in printed and "perplexity" in printed
    saved = BertForMaskedLM.from_pretrained(out)
    assert saved.loading_info["newly_initialized"] == []
    assert main(["mlm-head", str(tiny_teacher_dir), "--corpus", str(tmp_path / "corpus.txt"), "--held-out",
                 str(tmp_path / "held.txt"), "--output-dir", str(out)]) == 2  # no overwrite
