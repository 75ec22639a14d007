"""ONNX export: the exported graph under ONNX Runtime against our model and against transformers,
float and int8, every head, variable batch and sequence lengths; the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import minidistill as md
from minidistill.compress.quantize import quantize
from minidistill.core.tensor import no_grad
from minidistill.models import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification, BertModel

from .conftest import IDS, MASK, randomise, toy_teacher

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from minidistill.export import run, session, to_onnx  # noqa: E402


def _batches():
    """Batches of different sizes and lengths through one exported file (dynamic axes)."""
    rng = np.random.default_rng(0)
    out = [{"input_ids": IDS, "attention_mask": MASK}]
    for b, t in ((1, 3), (5, 11), (2, 16)):
        ids = rng.integers(1, 30, (b, t))
        mask = np.ones((b, t), np.int64)
        mask[0, t - 2:] = 0  # padding
        types = (np.arange(t)[None, :] >= t // 2).astype(np.int64).repeat(b, 0)  # a second segment
        out.append({"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types})
    return out


def _outputs(model, batch):
    with no_grad():
        out = model(**batch)
    if isinstance(model, BertModel):
        return {"last_hidden_state": out.last_hidden_state.numpy(), "pooler_output": out.pooler_output.numpy()}
    if isinstance(model, BertForQuestionAnswering):
        return {"start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}
    return {"logits": out.logits.numpy()}


def _real(a, batch):
    """Token-level outputs at real tokens only (padded positions are not defined alike)."""
    if a.ndim == 3:
        return a * batch["attention_mask"][..., None]
    return a * batch["attention_mask"] if a.shape == batch["attention_mask"].shape else a  # QA: (B, T)


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering,
                                 BertModel])
@pytest.mark.parametrize("kind", ["float", "int8", "int8-static", "int8-per-tensor"])
def test_onnx_runtime_runs_our_model(tmp_path, cls, kind):
    with md.use_backend("numpy"):
        model = toy_teacher(cls, dtype="float32")
        randomise(model, seed=4, scale=0.05)
        if kind == "int8":
            model = quantize(model)
        elif kind == "int8-static":
            model = quantize(model, "static", calibration=_batches())
        elif kind == "int8-per-tensor":
            model = quantize(model, activations="per_tensor")
        sess = session(to_onnx(model, tmp_path / "m.onnx"))
        for batch in _batches():
            ours, theirs = _outputs(model, batch), run(sess, batch)
            assert set(theirs) == set(ours)
            for k in ours:
                assert theirs[k].shape == ours[k].shape
                np.testing.assert_allclose(_real(theirs[k], batch), _real(ours[k], batch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cls,pooling", [("BertForSequenceClassification", "cls"), ("BertForSequenceClassification", "mean"),
                                         ("BertForTokenClassification", "cls"), ("BertForQuestionAnswering", "cls")])
def test_onnx_export_equals_transformers(tmp_path, cls, pooling):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    with md.use_backend("numpy"):
        ours = toy_teacher(getattr(md.models, cls), dtype="float32", classifier_pooling=pooling)
        randomise(ours, seed=5, scale=0.05)
        ours.save_pretrained(tmp_path / "model")
        sess = session(to_onnx(ours, tmp_path / "m.onnx"))
    hf = getattr(transformers, cls).from_pretrained(tmp_path / "model").eval()
    for batch in _batches():
        if pooling == "mean":  # transformers' BERT pools the first token; pool by hand through its pooler
            with torch.no_grad():
                h = hf.bert(**{k: torch.as_tensor(v) for k, v in batch.items()}).last_hidden_state
                m = torch.as_tensor(batch["attention_mask"])[..., None].float()
                pooled = torch.tanh(hf.bert.pooler.dense((h * m).sum(1) / m.sum(1)))
                want = hf.classifier(pooled).numpy()
        elif cls == "BertForQuestionAnswering":
            with torch.no_grad():
                out = hf(**{k: torch.as_tensor(v) for k, v in batch.items()})
            got = run(sess, batch)
            for name in ("start_logits", "end_logits"):
                np.testing.assert_allclose(_real(got[name], batch), _real(getattr(out, name).numpy(), batch), atol=1e-4)
            continue
        else:
            with torch.no_grad():
                want = hf(**{k: torch.as_tensor(v) for k, v in batch.items()}).logits.numpy()
        got = run(sess, batch)["logits"]
        np.testing.assert_allclose(_real(got, batch), _real(want, batch), atol=1e-4, rtol=1e-4)


def test_fused_int8_style_is_close_to_ours(tmp_path):
    """The fused style re-quantizes activations its own way (per tensor, asymmetric): as close
    to the float model as our per-tensor int8 model is, within a factor of two; not equal."""
    with md.use_backend("numpy"):
        model = toy_teacher(dtype="float32")
        randomise(model, seed=4, scale=0.3)
        q, per_tensor = quantize(model), quantize(model, activations="per_tensor")
        exact = session(to_onnx(q, tmp_path / "e.onnx"))
        fused = session(to_onnx(q, tmp_path / "f.onnx", int8_style="fused"))
        for batch in _batches():
            ref = _outputs(model, batch)["logits"]
            ours = _outputs(q, batch)["logits"]
            np.testing.assert_allclose(run(exact, batch)["logits"], ours, atol=1e-4)
            err_fused = np.abs(run(fused, batch)["logits"] - ref).max()
            err_ours = np.abs(_outputs(per_tensor, batch)["logits"] - ref).max()
            assert 0 < err_fused < 2 * err_ours + 1e-4
    with pytest.raises(ValueError, match="int8_style"):
        to_onnx(q, tmp_path / "x.onnx", int8_style="fast")


def test_export_refuses_what_it_cannot_write(tmp_path, monkeypatch):
    from minidistill.compress.wid import WIDConfig, WIDModel

    with md.use_backend("numpy"):
        model = toy_teacher(dtype="float32")
        wid = WIDModel(model, WIDConfig(hidden_size=8, intermediate_size=12, num_attention_heads=2))
        with pytest.raises(ValueError, match="fold"):
            to_onnx(wid, tmp_path / "w.onnx")
        assert not (tmp_path / "w.onnx").exists()
        monkeypatch.setitem(sys.modules, "onnx", None)
        with pytest.raises(ImportError, match=r"minidistill\[onnx\]"):
            to_onnx(model, tmp_path / "m.onnx")


def test_cli_quantizes_and_exports(tiny_teacher_dir, tmp_path, capsys):
    from minidistill.cli import main

    assert main(["quantize", str(tiny_teacher_dir), str(tmp_path / "int8")]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "MB" in out
    cfg = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert cfg["quantization"]["activations"] == "per_token" and cfg["quantization"]["embeddings"]
    metrics = json.loads((tmp_path / "int8" / "metrics.json").read_text())
    assert abs(metrics["test"]["accuracy"] - metrics["float_test"]["accuracy"]) < 0.1
    assert main(["quantize", str(tiny_teacher_dir), str(tmp_path / "int8")]) == 2  # refuses to overwrite
    assert main(["export", str(tmp_path / "int8"), str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "largest logit difference" in out
    assert main(["export", str(tmp_path / "int8"), str(tmp_path / "onnx")]) == 2  # refuses to replace it
    assert "--overwrite" in capsys.readouterr().err
    diff = float(out.rsplit("difference", 1)[1].strip())
    assert diff < 1e-4
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()
    # the report takes the int8 folder and the ONNX folder like any model, linked to what they came from
    assert main(["report", str(tiny_teacher_dir), str(tmp_path / "int8"), str(tmp_path / "onnx"),
                 "--teacher", str(tiny_teacher_dir), "--task", "rotten_tomatoes", "--limit", "16", "--rounds", "1",
                 "--max-length", "16", "--json", str(tmp_path / "rep.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "rep.json").read_text())["rows"]}
    assert rows["int8"]["variant_of"] == "teacher" and rows["onnx"]["variant_of"] == "int8"
    assert rows["onnx"]["seq_per_s"] > 0 and abs(rows["onnx"]["accuracy"] - rows["int8"]["accuracy"]) <= 1 / 16
    assert rows["int8"]["disk_mb"] < 0.4 * rows["teacher"]["disk_mb"]
    from minidistill.export import OnnxModel
    from minidistill.report import trained_fraction_of

    onnx_model = OnnxModel(tmp_path / "onnx")
    assert trained_fraction_of(onnx_model) is None and onnx_model.num_parameters() > 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "int8")]) == 0
    assert "transformers: no" in capsys.readouterr().out
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "int8")
    assert loaded.bert.encoder.layer[0].attention.self.query.weight.dtype == np.int8
