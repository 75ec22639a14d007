"""The compression report (minidistill/report.py) and ``minidistill report``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minidistill as md
from minidistill.cli import main
from minidistill.compress import compacter, make_minialbert
from minidistill.data import Tokenizer
from minidistill.models.stats import model_stats
from minidistill.report import Report, report, saved_models

from .conftest import tiny_bert, toy_data


@pytest.fixture(scope="module")
def models():
    teacher = tiny_bert(0, layers=2)
    plain = tiny_bert(1, layers=1)
    md.manual_seed(2)
    comp = compacter(tiny_bert(3, layers=2), n=4, reduction=8)
    for p in comp.parameters():  # non-zero adapters: folding has something to do
        if p.requires_grad:
            p.data[...] += 0.05 * np.random.default_rng(0).standard_normal(p.shape).astype(p.dtype)
    mini = make_minialbert(teacher, embedding_size=16, num_repeats=2, adapter_reduction=4)
    return teacher, {"plain": plain, "compacter": comp, "minialbert": mini}


def test_report_rows_match_independent_counts(models, tok):
    teacher, students = models
    data = toy_data(24)
    rep = report(students, teacher=teacher, data=data, tokenizer=tok, max_length=16, rounds=1, speed_examples=16)
    assert [r["name"] for r in rep.rows] == ["teacher", "plain", "compacter", "minialbert"]
    for name, m in [("teacher", teacher), *students.items()]:
        r, st = rep.row(name), model_stats(m, 16)
        assert r["unique_parameters"] == m.num_parameters() == st["unique_parameters"]
        assert r["executed_parameters"] == st["executed_parameters"]
        assert r["mflops_per_token"] == pytest.approx(st["flops_per_token"] / 1e6)
        assert r["seq_per_s"] > 0 and r["latency_ms"] > 0
        acc = md.train.evaluate(m, tok, data, 64, 16)["accuracy"]
        assert r["accuracy"] == acc
        assert r["retention"] == pytest.approx(100 * acc / rep.row("teacher")["accuracy"])
    assert rep.row("teacher")["speedup"] == 1.0
    assert rep.row("minialbert")["executed_parameters"] > rep.row("minialbert")["unique_parameters"]
    # only the adapter model has a trained fraction; folding it (PHM → dense) and unrolling the
    # MiniALBERT keep the logits; a plain BERT has nothing to fold
    assert rep.row("plain")["trained_fraction"] is None and rep.row("plain")["fold_residual"] is None
    comp = students["compacter"]
    named = dict(comp.named_parameters())
    expect = sum(int(np.prod(p.shape)) for n, p in named.items()
                 if ".adapter." in n or "LayerNorm" in n or n.startswith("classifier")) / comp.num_parameters()
    assert rep.row("compacter")["trained_fraction"] == pytest.approx(expect)
    assert rep.row("compacter")["fold_residual"] < 1e-4
    assert rep.row("minialbert")["fold_residual"] < 1e-4
    flags_before = [p.requires_grad for p in comp.parameters()]
    report({"c": comp}, rounds=1)
    assert [p.requires_grad for p in comp.parameters()] == flags_before  # the report changes nothing


def test_disk_size_is_the_saved_file(models, tmp_path):
    teacher, _ = models
    teacher.save_pretrained(tmp_path / "t")
    rep = report({}, teacher=teacher, folders={"teacher": tmp_path / "t"}, rounds=1)
    assert rep.row("teacher")["disk_mb"] == pytest.approx((tmp_path / "t" / "model.safetensors").stat().st_size / 1e6)
    assert rep.row("teacher")["seq_per_s"] is None  # no tokenizer: nothing timed


def test_text_json_and_plot(models, tok, tmp_path):
    teacher, students = models
    rep = report({"plain": students["plain"]}, teacher=teacher, data=toy_data(16), tokenizer=tok, max_length=16,
                 rounds=1)
    text = rep.to_text()
    assert "teacher *" in text and "plain" in text and "retention" in text
    rep.save_json(tmp_path / "r.json")
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["teacher"] == "teacher" and [r["name"] for r in back["rows"]] == ["teacher", "plain"]
    png = rep.plot(tmp_path / "plot.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nothing to plot"):
        Report([{"name": "x", "accuracy": None}]).plot(tmp_path / "no.png")


def test_report_needs_a_tokenizer_for_accuracy(models):
    teacher, _ = models
    with pytest.raises(ValueError, match="tokenizer"):
        report({}, teacher=teacher, data=toy_data(8))


def test_cli_reports_a_folder_of_saved_models(models, minilm_path, tmp_path, capsys):
    teacher, students = models
    root = tmp_path / "runs"
    teacher.save_pretrained(root / "teacher")
    students["plain"].save_pretrained(root / "plain")
    for d in ("teacher", "plain"):
        Tokenizer.from_pretrained(minilm_path).save_pretrained(root / d)
    assert set(saved_models([root])) == {"teacher", "plain"}
    rc = main(["report", str(root), "--limit", "16", "--rounds", "1", "--max-length", "16",
               "--json", str(tmp_path / "rep.json"), "--plot", str(tmp_path / "rep.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "plain" in out and "teacher *" in out
    rows = json.loads((tmp_path / "rep.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["teacher", "plain"] and (tmp_path / "rep.png").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no saved model" in capsys.readouterr().err


def test_the_svg_plot_needs_no_library_and_labels_never_overlap(tmp_path):
    """Crowded points (two models at almost the same place, as a folded student and its twin):
    every model gets one label, no label box intersects another label or any point, the teacher
    is a star, a higher accuracy is drawn higher, the Pareto fronts join exactly the models
    nothing beats, and an int8 variant is joined to its float model."""
    import xml.etree.ElementTree as ET

    from minidistill.plot import pareto_front

    rows = [{"name": "teacher", "accuracy": 0.85, "disk_mb": 90.0, "seq_per_s": 100.0},
            {"name": "wid", "accuracy": 0.836, "disk_mb": 60.0, "seq_per_s": 150.0},
            {"name": "kd", "accuracy": 0.835, "disk_mb": 60.0, "seq_per_s": 151.0},
            {"name": "kd-twin", "accuracy": 0.8352, "disk_mb": 60.04, "seq_per_s": 152.0},
            {"name": "kd-int8", "accuracy": 0.834, "disk_mb": 16.0, "seq_per_s": 160.0, "variant_of": "kd"},
            {"name": "bilstm", "accuracy": 0.81, "disk_mb": 9.0, "seq_per_s": 1460.0},
            {"name": "untimed", "accuracy": 0.80, "disk_mb": 20.0, "seq_per_s": None}]
    path = Report(rows, "teacher").plot(tmp_path / "report.svg")
    root = ET.parse(path).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    panels = root.findall("s:g", ns)
    assert [g.get("data-axis") for g in panels] == ["seq_per_s", "disk_mb"]
    for g, expected in zip(panels, (6, 7)):  # the untimed model is not on the speed panel
        labels = g.findall("s:text[@class='label']", ns)
        assert sorted(t.text for t in labels) == sorted(r["name"] for r in rows if r.get(g.get("data-axis")))
        assert len(labels) == expected and len(g.findall("s:polygon[@class='teacher']", ns)) == 1
        boxes = [(float(t.get("x")), float(t.get("y")) - 10, float(t.get("x")) + 6.2 * len(t.text), float(t.get("y")) + 3)
                 for t in labels]
        points = [(float(c.get("cx")), float(c.get("cy"))) for c in g.findall("s:circle", ns)]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
            for x, y in points:
                assert not (a[0] < x < a[2] and a[1] < y < a[3]), (a, (x, y))
        ys = {c.get("data-name"): float(c.get("cy")) for c in g.findall("s:circle", ns)}
        assert ys["wid"] < ys["kd"] < ys["bilstm"]  # SVG's y grows downwards
        assert len(g.findall("s:line[@class='variant']", ns)) == 1
        assert len(g.find("s:polyline[@class='pareto']", ns).get("points").split()) >= 2
    speed = [(r["seq_per_s"], r["accuracy"]) for r in rows if r["seq_per_s"]]
    assert pareto_front(speed, True) == [(100.0, 0.85), (150.0, 0.836), (152.0, 0.8352), (160.0, 0.834), (1460.0, 0.81)]
    size = [(r["disk_mb"], r["accuracy"]) for r in rows]
    assert pareto_front(size, False) == [(9.0, 0.81), (16.0, 0.834), (60.0, 0.836), (90.0, 0.85)]


def test_the_report_flags_short_runs_and_majority_class_scores(models, tok, tmp_path):
    teacher, students = models
    data = toy_data(16)
    majority = np.bincount(data.labels).max() / len(data)
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"steps": 24}))
    rep = report({"plain": students["plain"]}, teacher=teacher, data=data, tokenizer=tok, max_length=16, rounds=1,
                 folders={"plain": folder}, accuracies={"teacher": 0.9, "plain": majority})
    notes = rep.row("plain")["notes"]
    assert any("24 steps only" in n for n in notes) and any("most frequent class" in n for n in notes)
    assert rep.row("teacher")["notes"] == []
    text = rep.to_text()
    assert "plain †" in text and "† plain: trained for 24 steps only" in text


def test_speed_takes_more_rounds_and_warns_when_round_times_spread(tok):
    """A model whose round times jump (a busy machine) gets more rounds, up to three times as
    many, and a † note; a steady one beside it keeps a small spread."""
    import time as _time

    from minidistill.report import SPREAD_WARNING, _notes, _speed

    class Timed:
        def __init__(self, pattern):
            self.pattern, self.calls = pattern, 0

        def eval(self):
            return self

        def __call__(self, input_ids, **_):
            if len(input_ids) > 1:  # a batch, not the one-sequence latency probe
                _time.sleep(self.pattern[self.calls % len(self.pattern)])
                self.calls += 1

    out = _speed({"busy": Timed([0.002, 0.02, 0.002, 0.03]), "steady": Timed([0.01])}, tok, toy_data(8), 16, rounds=3)
    assert out["busy"]["rounds"] == 9 and out["busy"]["speed_spread"] > SPREAD_WARNING
    assert out["steady"]["speed_spread"] < out["busy"]["speed_spread"]
    assert any("busy" in n for n in _notes({"speed_spread": out["busy"]["speed_spread"]}, None, None))
    assert not _notes({"speed_spread": 0.01}, None, None)
