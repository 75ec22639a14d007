"""The command line on tagging and QA tasks: fine-tune, distil (every student kind), evaluate,
predict (entities with spans, answers with scores) and report (F1 instead of accuracy), from
hand-written CoNLL and SQuAD files and a small teacher over the real vocabulary."""

from __future__ import annotations

import json

import pytest

from minidistill.cli import main

pytestmark = pytest.mark.checkpoint

NER = [("John Smith lives in Paris .", "B-PER I-PER O O B-LOC O"),
       ("Mary visited London and Rome .", "B-PER O B-LOC O B-LOC O"),
       ("The river flows through Berlin .", "O O O O B-LOC O"),
       ("Anna Berg met Tom in Oslo .", "B-PER I-PER O B-PER O B-LOC O")]


def _conll(path, rows):
    lines = ["-DOCSTART- O", ""]
    for words, tags in rows:
        lines += [f"{w} {t}" for w, t in zip(words.split(), tags.split())] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _squad(path):
    ctx = "John Smith lives in Paris. Mary visited London and Rome. The river Seine flows through Paris."
    qas = [("Where does John Smith live?", "Paris"), ("Who visited London?", "Mary"),
           ("Which river flows through Paris?", "Seine")]
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": ctx, "qas": [
        {"id": str(i), "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}
        for i, (q, a) in enumerate(qas)]}]}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_ner_end_to_end_from_conll_files(tmp_path, capsys, tiny_teacher_dir):
    train = _conll(tmp_path / "train.conll", NER * 8)
    dev = _conll(tmp_path / "dev.conll", NER)
    data = ["--data.task=files", f"--data.train_file={train}", f"--data.dev_file={dev}", f"--data.test_file={dev}"]
    common = [*data, "--train.max_steps=3", "--train.batch_size=8", "--train.max_length=16", "--train.progress=false"]
    teacher = tmp_path / "teacher"
    assert main(["finetune", f"--model.path={tiny_teacher_dir}", f"--output_dir={teacher}", *common]) == 0
    saved = json.loads((teacher / "config.json").read_text())
    assert saved["architectures"] == ["BertForTokenClassification"]
    assert saved["id2label"] == {"0": "O", "1": "B-LOC", "2": "B-PER", "3": "I-PER"}
    metrics = json.loads((teacher / "metrics.json").read_text())
    assert set(metrics["dev"]) >= {"f1", "precision", "recall", "token_accuracy", "loss"}
    students = {"tf": ["--objectives.hidden_mse=1"],
                "lstm": ["--student.kind=bilstm", "--bilstm.hidden_size=8", "--recipe=xtremedistil",
                         f"--cache_dir={tmp_path / 'cache'}"],
                "wid": ["--student.kind=wid", "--student.hidden_size=16", "--student.num_attention_heads=2",
                        "--student.intermediate_size=32", "--wid.rounds=1"],
                "theseus": ["--student.kind=theseus", "--student.num_layers=2"],
                "albert": ["--student.kind=minialbert", "--minialbert.embedding_size=16", "--minialbert.repeats=2"]}
    for name, extra in students.items():
        assert main(["distill", f"--teacher.path={teacher}", *extra, f"--output_dir={tmp_path / 'students' / name}",
                     *common]) == 0, name
        assert "f1" in json.loads((tmp_path / "students" / name / "metrics.json").read_text())["dev"]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "students" / "wid"), "--split", "dev"]) == 0
    assert "f1" in json.loads(capsys.readouterr().out)
    assert main(["predict", str(teacher), "--text", "John Smith lives in Paris ."]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("\tJohn Smith lives in Paris .")
    assert main(["report", str(tmp_path / "students"), "--teacher", str(teacher), "--split", "dev", "--rounds=1"]) == 0
    out = capsys.readouterr().out
    assert "dev f1" in out and "bilstm" not in out.split("\n")[0]


def test_qa_end_to_end_from_a_squad_file(tmp_path, capsys, tiny_teacher_dir):
    squad = _squad(tmp_path / "train.json")
    data = ["--data.task=files", f"--data.train_file={squad}", f"--data.dev_file={squad}", "--data.stride=8"]
    common = [*data, "--train.max_steps=3", "--train.batch_size=4", "--train.max_length=32", "--train.progress=false"]
    teacher = tmp_path / "teacher"
    assert main(["finetune", f"--model.path={tiny_teacher_dir}", f"--output_dir={teacher}", *common]) == 0
    assert json.loads((teacher / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert set(json.loads((teacher / "metrics.json").read_text())["dev"]) >= {"f1", "exact_match", "loss"}
    for name, extra in {"tf": [], "wid": ["--student.kind=wid", "--student.hidden_size=16",
                                          "--student.num_attention_heads=2", "--student.intermediate_size=32",
                                          "--wid.rounds=1"]}.items():
        assert main(["distill", f"--teacher.path={teacher}", *extra, f"--output_dir={tmp_path / name}", *common]) == 0
    capsys.readouterr()
    assert main(["predict", str(teacher), "--text", "Where does John live?",
                 "--context", "John Smith lives in Paris."]) == 0
    answer, score, question = capsys.readouterr().out.strip().split("\t")
    assert question == "Where does John live?" and answer in "John Smith lives in Paris." and float(score) == float(score)
    assert main(["predict", str(teacher), "--text", "Where?"]) == 2  # a QA model needs the passage
    assert main(["distill", f"--teacher.path={teacher}", "--student.kind=bilstm", f"--output_dir={tmp_path / 'x'}",
                 *common]) == 2  # no RNN student for QA: a clear error
