"""``minidistill general``: task-agnostic distillation from the command line, every student
kind, then ``finetune`` on a task; the folded WID masked-LM student read by transformers; the
held-out figures equal an independent evaluation; bad configurations refused with the reason."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minidistill as md
from minidistill.cli import main
from minidistill.data import CorpusCache, MaskingCollator, PackedCorpus, Tokenizer
from minidistill.models import BertConfig, BertForMaskedLM, MiniAlbertForMaskedLM, load_model
from minidistill.train.mlm import evaluate_masked_lm

pytestmark = pytest.mark.checkpoint
WORDS = "the model learns what its teacher knows about words and sentences in a small corpus of plain text".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("general")
    md.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64)
    BertForMaskedLM(cfg).save_pretrained(root / "teacher")
    Tokenizer.from_pretrained(minilm_path).save_pretrained(root / "teacher")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(5, 30))) for _ in range(rng.integers(1, 4)))
            for _ in range(60)]
    (root / "train.txt").write_text("\n\n".join(docs), encoding="utf-8")
    (root / "held.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS, 20)) for _ in range(10)), encoding="utf-8")
    return root


def _general(root, preset, out, *extra):
    return main(["general", "--preset", preset, "--teacher.path", str(root / "teacher"), "--teacher.backend", "numpy",
                 "--corpus.train", str(root / "train.txt"), "--corpus.held_out", str(root / "held.txt"),
                 "--corpus.seq_len", "32", "--corpus.cache_dir", str(root / "cache"), "--train.max_steps", "4",
                 "--train.batch_size", "8", "--train.progress", "false", "--output_dir", str(out), *extra])


def test_kd_student_and_its_held_out_figures(setup, capsys):
    out = setup / "kd"
    assert _general(setup, "kd", out) == 0
    printed = capsys.readouterr().out
    assert "student: held-out masked accuracy" in printed and "teacher: held-out" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    student = load_model(out)
    assert type(student) is BertForMaskedLM and student.config.num_hidden_layers == 2
    tok = Tokenizer.from_pretrained(out)
    held = PackedCorpus(CorpusCache.build(setup / "check-cache", tok, setup / "held.txt"), tok, 32,
                        masking=MaskingCollator(tok, seed=12345))
    again = evaluate_masked_lm(student, tok, held, 64, 32)
    assert again["masked_tokens"] == metrics["held_out_mlm"]["masked_tokens"] > 0
    assert abs(again["perplexity"] - metrics["held_out_mlm"]["perplexity"]) < 1e-3 * again["perplexity"]
    assert metrics["steps"] == 4 and metrics["stages"][0]["stage"] == "general"


@pytest.mark.torch
def test_wid_general_student_folds_to_a_masked_lm_transformers_reads(setup):
    transformers = pytest.importorskip("transformers")
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = setup / "wid"
    assert _general(setup, "wid", out, "--student.hidden_size", "16", "--student.num_attention_heads", "2",
                    "--student.intermediate_size", "32", "--wid.rounds", "2", "--wid.w_step", "1") == 0
    ours = load_model(out)
    assert type(ours) is BertForMaskedLM and ours.config.hidden_size == 16
    assert json.loads((out / "metrics.json").read_text())["fold"]["params_after"] == ours.num_parameters()
    hf = transformers.BertForMaskedLM.from_pretrained(str(out), attn_implementation="eager").eval()
    ids = np.array([[101, 1996, 2944, 103, 102]])
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours(ids).logits.numpy(), theirs, atol=1e-4)


def test_minialbert_general_student_is_fine_tuned_on_a_task(setup):
    out = setup / "minialbert"
    assert _general(setup, "minialbert", out, "--minialbert.embedding_size", "16", "--minialbert.repeats", "2") == 0
    general = load_model(out)
    assert type(general) is MiniAlbertForMaskedLM
    ft = setup / "minialbert-ft"
    assert main(["finetune", "--model.path", str(out), "--model.backend", "numpy", "--data.max_train_examples", "32",
                 "--data.max_eval_examples", "32", "--train.max_steps", "2", "--train.batch_size", "16",
                 "--train.progress", "false", "--output_dir", str(ft)]) == 0
    tuned = load_model(ft)
    assert type(tuned).__name__ == "MiniAlbertForSequenceClassification"
    loaded = md.models.MiniAlbertForSequenceClassification.from_pretrained(out)  # the general encoder, a fresh head
    np.testing.assert_array_equal(loaded.embeddings.word_embeddings.weight.numpy(),
                                  general.embeddings.word_embeddings.weight.numpy())


def test_bad_general_configurations_are_refused(setup, tiny_teacher_dir, capsys):
    assert main(["general", "--teacher.path", str(tiny_teacher_dir), "--corpus.train", str(setup / "train.txt"),
                 "--corpus.held_out", str(setup / "held.txt"), "--output_dir", str(setup / "x1")]) == 2
    assert "needs a masked-LM teacher or a bare encoder" in capsys.readouterr().err
    assert _general(setup, "kd", setup / "x2", "--student.kind", "bilstm") == 2
    assert "bilstm has no masked-LM head" in capsys.readouterr().err
    assert main(["general", "--teacher.path", str(setup / "teacher"), "--corpus.train", str(setup / "train.txt"),
                 "--corpus.seq_len", "32", "--output_dir", str(setup / "x3")]) == 2
    assert "corpus.held_out is required" in capsys.readouterr().err
    assert _general(setup, "kd", setup / "x4", "--corpus.seq_len", "100") == 2
    assert "exceeds the teacher's 64 positions" in capsys.readouterr().err


def test_theseus_general_student(setup):
    out = setup / "theseus"
    assert _general(setup, "kd", out, "--student.kind", "theseus") == 0
    student = load_model(out)
    assert type(student) is BertForMaskedLM and student.config.num_hidden_layers < 4
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("preset,extra", [
    ("kd", []),
    pytest.param("wid", ["--student.hidden_size", "16", "--student.num_attention_heads", "2",
                         "--student.intermediate_size", "32", "--wid.rounds", "2"], marks=pytest.mark.slow)])
def test_a_killed_general_run_continues_to_the_uninterrupted_result(setup, tmp_path, monkeypatch, capsys, preset, extra):
    """Killed after its second checkpoint, the same command continues and ends on the parameters
    (and held-out figures) of the run that was never killed: masks drawn by (seed, step)."""
    from minidistill.fileio import load_weights

    real, calls = md.train.Trainer.save_checkpoint, []

    def dying(self, directory=None):
        path = real(self, directory)
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return path

    common = [*extra, "--train.max_steps", "6", "--train.checkpoint_every", "2"]
    assert _general(setup, preset, tmp_path / "whole", *common) == 0
    with monkeypatch.context() as m:
        m.setattr(md.train.Trainer, "save_checkpoint", dying)
        assert _general(setup, preset, tmp_path / "killed", *common) == 2
    assert "killed" in capsys.readouterr().err
    assert _general(setup, preset, tmp_path / "killed", *common) == 0
    assert "continuing the killed run" in capsys.readouterr().out
    whole, resumed = load_weights(tmp_path / "whole"), load_weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert a["held_out_mlm"] == b["held_out_mlm"] and a["steps"] == b["steps"] == 6


def test_minilm_presets_transfer_the_last_layer_only(setup):
    """MiniLM: attention KL and value relations of the last layers, MiniLMv2: the last layers'
    relations; neither has a logit or MLM term (as the originals)."""
    from minidistill.cli import GeneralConfig, _preset, build_objectives
    from minidistill.compress import make_student
    from minidistill.config_io import load_config

    teacher = load_model(setup / "teacher")
    student = make_student(teacher, 2, init="lower")
    for preset, want in (("minilm", ["AttentionKL", "ValueRelationKL"]), ("minilmv2", ["MiniLMv2Relations"])):
        cfg = load_config(GeneralConfig, None, ["--objectives.relation_heads=4"], base=_preset("general", preset))
        objs = build_objectives(cfg.objectives, student, teacher)
        assert [type(o).__name__ for o in objs] == want and cfg.objectives.task == 0
        assert all(o.layer_map.pairs == ((1, 3),) for o in objs)
