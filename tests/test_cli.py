"""The command line: finetune / evaluate / predict / info on a small run, its errors, the
plot, and a short real fine-tuning run that must beat chance clearly."""

from __future__ import annotations

import json

import pytest

import minidistill as md
from minidistill.cli import main

pytestmark = pytest.mark.checkpoint


@pytest.mark.slow
def test_short_finetune_on_rotten_tomatoes_beats_chance(tmp_path, capsys):
    out = tmp_path / "ft"
    rc = main(["finetune", "--train.max_steps=80", "--train.max_length=48", "--train.lr=1e-4",
               "--model.backend=numba", f"--output_dir={out}", "--train.progress=false",
               f"--train.log_file={tmp_path / 'log.jsonl'}"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    majority = 0.57  # share of "fresh" in the dev split
    assert metrics["dev"]["accuracy"] > majority + 0.08, metrics["dev"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json"])

    capsys.readouterr()
    assert main(["predict", str(out), "--text", "a masterpiece, moving and funny", "--text", "a dull, lifeless mess"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["fresh", "rotten"]

    assert main(["evaluate", str(out), "--split", "dev"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == pytest.approx(metrics["dev"]["accuracy"], abs=1e-6)

    assert main(["info", str(out)]) == 0
    assert "parameters: 22,713,986" in capsys.readouterr().out

    pytest.importorskip("matplotlib")
    from minidistill.plot import learning_curves

    learning_curves(tmp_path / "log.jsonl", path=tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_cli_errors_are_clear_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["finetune", "--train.lrr=1", f"--output_dir={out}"]) == 2
    assert "unknown config key 'train.lrr' (did you mean 'train.lr'?)" in capsys.readouterr().err
    assert main(["finetune", "--train.lr=abc", f"--output_dir={out}"]) == 2
    assert "'train.lr' must be a number, got 'abc'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text,stars\ngood,5\n")
    assert main(["finetune", "--data.task=files", f"--data.train_file={bad}", f"--output_dir={out}"]) == 2
    assert "missing column 'label'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_failed_run_keeps_the_previous_output(tmp_path, monkeypatch, minilm_path):
    from minidistill import cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"previous model")

    def boom(self):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(md.train.Trainer, "train", boom)
    rc = cli.main(["finetune", "--train.max_steps=2", "--data.max_train_examples=64", f"--output_dir={out}"])
    assert rc == 2
    assert (out / "model.safetensors").read_bytes() == b"previous model"


@pytest.mark.slow
def test_distill_command_trains_and_saves_every_student_kind(tmp_path, capsys, monkeypatch, tiny_teacher_dir):
    """``minidistill distill`` on a few examples, from a small 4-layer teacher: a transformer
    student with attention KL, a BiLSTM with the XtremeDistil recipe, a WID student (pruned,
    folded), a Theseus successor and a MiniALBERT; and a Compacter++ fine-tuning. All are saved,
    reload, and evaluate from the CLI."""
    teacher = tmp_path / "teacher"
    common = ["--data.max_train_examples=64", "--train.max_steps=3", "--train.batch_size=16", "--train.max_length=32"]
    assert main(["finetune", f"--model.path={tiny_teacher_dir}", f"--output_dir={teacher}", *common]) == 0
    assert main(["distill", f"--teacher.path={teacher}", "--objectives.attention_kl=1", "--objectives.hidden_map=combine",
                 "--objectives.hidden_mse=1", f"--output_dir={tmp_path / 'tf'}", *common]) == 0
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=bilstm", "--bilstm.hidden_size=16",
                 "--recipe=xtremedistil", "--transfer.augment_copies=1", f"--cache_dir={tmp_path / 'cache'}",
                 f"--output_dir={tmp_path / 'lstm'}", *common]) == 0
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=wid", "--student.hidden_size=16",
                 "--student.num_attention_heads=2", "--student.intermediate_size=32", "--wid.rounds=1",
                 f"--output_dir={tmp_path / 'wid'}", *common]) == 0
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=theseus", "--student.num_layers=2",
                 "--theseus.replace=linear", f"--output_dir={tmp_path / 'theseus'}", *common]) == 0
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=minialbert", "--minialbert.embedding_size=16",
                 "--minialbert.repeats=2", "--objectives.soft_kd=5", "--objectives.temperature=1",
                 "--objectives.attention_kl=3", "--objectives.hidden_cosine=3", f"--output_dir={tmp_path / 'albert'}",
                 *common]) == 0
    assert main(["finetune", f"--model.path={tiny_teacher_dir}", "--adapters=compacter++", "--adapter_reduction=2",
                 "--classifier_pooling=mean", f"--output_dir={tmp_path / 'pet'}", *common]) == 0
    assert json.loads((tmp_path / "pet" / "config.json").read_text())["classifier_pooling"] == "mean"
    assert json.loads((tmp_path / "albert" / "config.json").read_text())["model_type"] == "minialbert"
    pet = json.loads((tmp_path / "pet" / "metrics.json").read_text())
    assert pet["trained_parameters"] < 0.01 * pet["parameters"]
    wid_cfg = json.loads((tmp_path / "wid" / "config.json").read_text())
    assert (wid_cfg["hidden_size"], wid_cfg["num_attention_heads"], wid_cfg["intermediate_size"]) == (16, 2, 32)
    assert json.loads((tmp_path / "theseus" / "config.json").read_text())["num_hidden_layers"] == 2
    assert json.loads((tmp_path / "wid" / "metrics.json").read_text())["fold"]["max_residual"] == 0.0
    for name in ("tf", "lstm", "wid", "theseus", "albert", "pet"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert 0.0 <= metrics["dev"]["accuracy"] <= 1.0
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / name), "--split", "dev"]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "albert")]) == 0
    assert "MiniALBERT, 2 repeats of one shared layer" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "pet")]) == 0
    assert "adapter-only training trains" in capsys.readouterr().out
    stages = json.loads((tmp_path / "lstm" / "metrics.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["representation"] + ["logits"] * 3 + ["labels"] * 3
    assert main(["finetune", "--classifier_pooling=max", f"--output_dir={tmp_path / 'x'}"]) == 2
    assert "classifier_pooling must be one of cls, mean" in capsys.readouterr().err
    assert main(["distill", f"--teacher.path={teacher}", "--recipe=xtreme", f"--output_dir={tmp_path / 'x'}"]) == 2
    assert "recipe must be" in capsys.readouterr().err
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=bilstm", "--objectives.attention_kl=1",
                 *common, f"--output_dir={tmp_path / 'y'}"]) == 2
    assert "need a transformer student" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_info_and_predict_work_on_every_saved_model_kind(tmp_path, capsys, minilm_path):
    """BERT, BiLSTM and MiniALBERT folders as minidistill saves them: ``info`` describes each and
    ``predict`` prints the teacher's label names (a BiLSTM student used to print "0" / "1")."""
    from minidistill.compress import make_bilstm_student, make_minialbert
    from minidistill.data import Tokenizer, load_dataset

    from .conftest import tiny_bert

    tok = Tokenizer.from_pretrained(minilm_path)
    dev16 = load_dataset("rotten_tomatoes", "dev").select(range(16))
    teacher = tiny_bert(0)
    teacher.config.id2label, teacher.config.label2id = {0: "rotten", 1: "fresh"}, {"rotten": 0, "fresh": 1}
    models = {"bert": teacher, "bilstm": make_bilstm_student(teacher, hidden_size=8, embedding_size=16),
              "minialbert": make_minialbert(teacher, embedding_size=16, adapter_reduction=4)}
    described = {"bert": "BERT, 2 layers", "bilstm": "BiLSTM student, 1 layer(s) of 8 units",
                  "minialbert": "MiniALBERT, 2 repeats of one shared layer"}
    for kind, model in models.items():
        folder = tmp_path / kind
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        capsys.readouterr()
        assert main(["info", str(folder)]) == 0
        out = capsys.readouterr().out
        assert described[kind] in out and f"{model.num_parameters():,} unique" in out, out
        with md.no_grad():
            want = model(**tok.encode(["a quiet triumph"])).logits.numpy().argmax(-1)[0]
        assert main(["predict", str(folder), "--text", "a quiet triumph"]) == 0
        assert capsys.readouterr().out.split("\t")[0] == ["rotten", "fresh"][want], kind
        assert main(["evaluate", str(folder), "--split", "dev", "--data.max_eval_examples=16"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["accuracy"] == pytest.approx(md.train.evaluate(model, tok, dev16, 64, 128)["accuracy"])
    assert main(["report", str(tmp_path / "bilstm"), str(tmp_path / "minialbert"), "--teacher", str(tmp_path / "bert"),
                 "--limit", "16", "--rounds", "1", "--max-length", "16", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["name"] for r in rows] == ["teacher", "bilstm", "minialbert"] and all(r["accuracy"] for r in rows)



def test_a_saved_model_is_never_replaced_without_overwrite(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.json").write_text('{"previous": true}')
    assert main(["finetune", "--train.max_steps=1", f"--output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "already holds a saved model" in err and "--overwrite=true" in err
    assert (out / "metrics.json").read_text() == '{"previous": true}'

    def boom(self):
        raise RuntimeError("reached training")

    monkeypatch.setattr(md.train.Trainer, "train", boom)  # with --overwrite the run gets as far as training
    assert main(["finetune", "--train.max_steps=1", "--data.max_train_examples=16", "--overwrite=true",
                 f"--output_dir={out}"]) == 2
    assert "reached training" in capsys.readouterr().err


def test_a_missing_teacher_and_a_backend_typo_are_named_before_any_work(tmp_path, capsys):
    assert main(["distill", f"--teacher.path={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'd'}"]) == 2
    err = capsys.readouterr().err
    assert "teacher.path" in err and "does not exist" in err
    assert main(["demo", "--backend", "numbaa", "--output-dir", str(tmp_path / "demo")]) == 2
    captured = capsys.readouterr()
    assert "unknown backend 'numbaa'" in captured.err and "minidistill demo (" not in captured.out
    assert not (tmp_path / "demo").exists() and not (tmp_path / "d").exists()


def test_the_configuration_page_and_help_list_every_key(capsys):
    """docs/configuration.md is what ``minidistill config … --markdown`` generates (regenerate it
    after changing a config), and ``--help`` lists every key the loader accepts."""
    from pathlib import Path

    from minidistill.cli import DistillConfig, FinetuneConfig, config_reference
    from minidistill.config_io import describe, load_config

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert page == config_reference("all", True), "stale: minidistill config all --markdown > docs/configuration.md"
    for what in ("methods", "finetune", "distill"):
        assert config_reference(what, True) in page
    for cls, cmd in ((FinetuneConfig, "finetune"), (DistillConfig, "distill")):
        keys = [r["key"] for r in describe(cls) if not r["section"]]
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        for key in keys:
            assert f"--{key}=" in out, key
            value = "1" if key.endswith(("steps", "size", "epochs", "rounds")) else None
            if value:  # a listed key is one the loader takes
                load_config(cls, None, [f"--{key}={value}"])
        assert all(r["help"] for r in describe(cls)), [r["key"] for r in describe(cls) if not r["help"]]


def test_user_files_labels_are_announced_and_report_reads_the_teachers_data(tmp_path, capsys, tiny_teacher_dir):
    """A run on user files (no label set given) prints the labels it found and flags a class
    seen once or absent from dev; the table names the run by its folder; ``report`` evaluates on
    the teacher's own files (every data source), and --data.* changes them."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = {"train": [("a fine film", "pos"), ("dull", "neg"), ("great fun", "pos"), ("awful", "neg"), ("meh", "neu")],
            "dev": [("lovely", "pos"), ("boring", "neg")], "test": [("superb", "pos"), ("weak", "neg"), ("good", "pos")]}
    for split, items in rows.items():
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in items))
    data = ["--data.task=files", f"--data.train_file={folder / 'train.tsv'}", f"--data.dev_file={folder / 'dev.tsv'}",
            f"--data.test_file={folder / 'test.tsv'}", "--data.text_column=sentence"]
    out = tmp_path / "ft-reviews"
    assert main(["finetune", f"--model.path={tiny_teacher_dir}", *data, "--train.max_steps=2", "--train.batch_size=4",
                 "--train.max_length=16", "--train.progress=false", f"--output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "labels found in reviews (none given): 'neg' ×2, 'neu' ×1, 'pos' ×2" in printed
    assert "['neu'] occur once" in printed and "['neu'] of the training file never occur in the dev file" in printed
    assert "\nft-reviews " in printed  # the table row is the output folder's name
    assert json.loads((out / "metrics.json").read_text())["task"] == "reviews"  # the folder, not "train"

    assert main(["report", str(tiny_teacher_dir), "--teacher", str(out), "--rounds", "1"]) == 2
    assert "predicts 2 labels but the data (reviews) has 3" in capsys.readouterr().err
    student = tmp_path / "ft-reviews-2"
    assert main(["finetune", f"--model.path={out}", *data, "--train.max_steps=1", "--train.batch_size=4",
                 "--train.max_length=16", "--train.progress=false", f"--output_dir={student}"]) == 0
    capsys.readouterr()
    assert main(["report", str(student), "--teacher", str(out), "--rounds", "1", "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    test_acc = json.loads((student / "metrics.json").read_text())["test"]["accuracy"]
    assert rep["rows"][1]["accuracy"] == pytest.approx(test_acc)  # on the teacher's own test file
    assert main(["report", str(student), "--teacher", str(out), "--rounds", "1", "--split", "dev",
                 f"--data.dev_file={folder / 'test.tsv'}", "--json", "-"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["rows"][1]["accuracy"] == pytest.approx(test_acc)  # dev redirected to the test file


def test_presets_are_valid_recipes_that_overrides_change(capsys):
    from minidistill.cli import PRESETS, DistillConfig, FinetuneConfig
    from minidistill.compress import registry
    from minidistill.config_io import load_config

    for cmd, cls in (("finetune", FinetuneConfig), ("distill", DistillConfig)):
        for name, (about, table) in PRESETS[cmd].items():
            cfg = load_config(cls, None, [], base=table)  # every preset is a valid config
            assert about and cfg.train.max_length == 64
            if cmd == "distill":
                assert cfg.student.kind in registry.methods("student")
                assert cfg.recipe in registry.get(cfg.student.kind, "student").recipes
    cfg = load_config(FinetuneConfig, None, ["--train.epochs=1"], base=PRESETS["finetune"]["teacher"][1])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.eval_every) == (1e-4, 1, 267)  # the override wins
    with pytest.raises(SystemExit):
        main(["distill", "--preset", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
