"""The real MiniLM-L6 checkpoint against ``transformers.BertModel``: outputs, gradients,
saving and loading both ways, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import minidistill as md
from minidistill.core import functions as F
from minidistill.data import Tokenizer
from minidistill.models import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                               BertForTokenClassification, BertModel)
from minidistill.fileio import CheckpointError

from .conftest import ALL_BACKENDS, SENTENCES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = [pytest.mark.torch, pytest.mark.checkpoint]


@pytest.fixture(scope="module")
def batch(minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    enc = tok.encode(SENTENCES, padding="longest")
    assert enc["attention_mask"].min() == 0  # the batch really is padded
    return enc


@pytest.fixture(scope="module")
def hf_model(minilm_path):
    return transformers.BertModel.from_pretrained(str(minilm_path), attn_implementation="eager").eval()


def _hf_forward(model, enc, **kw):
    return model(**{k: torch.tensor(v) for k, v in enc.items()}, output_hidden_states=True,
                 output_attentions=True, **kw)


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_outputs_match_transformers(minilm_path, batch, hf_model, name):
    ours = BertModel.from_pretrained(minilm_path, backend=name)
    with md.no_grad():
        out = ours(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = _hf_forward(hf_model, batch)
    close = dict(atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), ref.last_hidden_state.numpy(), **close)
    np.testing.assert_allclose(out.pooler_output.numpy(), ref.pooler_output.numpy(), **close)
    assert len(out.hidden_states) == len(ref.hidden_states) == 7
    for a, b in zip(out.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **close)
    assert len(out.attentions) == 6
    for a, b in zip(out.attentions, ref.attentions):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **close)


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_parameter_gradients_match_transformers(minilm_path, batch, hf_model, name):
    ours = BertModel.from_pretrained(minilm_path, backend=name)
    rng = np.random.default_rng(0)
    b, t = batch["input_ids"].shape
    w_hidden = rng.standard_normal((b, t, 384)).astype(np.float32)
    w_pool = rng.standard_normal((b, 384)).astype(np.float32)

    out = ours(**batch)
    ops = ours.backend
    loss = (out.last_hidden_state * md.Tensor(ops.asarray(w_hidden), backend=ops)).sum() + \
        (out.pooler_output * md.Tensor(ops.asarray(w_pool), backend=ops)).sum()
    loss.backward()

    hf_model.zero_grad()
    ref = hf_model(**{k: torch.tensor(v) for k, v in batch.items()})
    ref_loss = (ref.last_hidden_state * torch.tensor(w_hidden)).sum() + (ref.pooler_output * torch.tensor(w_pool)).sum()
    ref_loss.backward()
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-4)

    scale = _assert_gradients_match(ours, hf_model)
    for n, p in ours.named_parameters():
        if n.endswith("attention.self.key.bias"):
            assert np.linalg.norm(ops.to_numpy(p.grad)) < 1e-6 * scale


def _assert_gradients_match(ours, hf_model) -> float:
    """Every parameter's gradient equals transformers' within 1e-3 relative; returns the largest
    gradient norm. The key biases' gradient is exactly zero in exact arithmetic (a key bias adds
    the same q·b to every score of a row, which softmax ignores), so both sides hold rounding
    noise there: the comparison gets an absolute floor of 1e-6 of the largest gradient norm."""
    hf_grads = dict(hf_model.named_parameters())
    assert {n for n, _ in ours.named_parameters()} == set(hf_grads)
    scale = max(np.linalg.norm(p.grad.numpy()) for p in hf_model.parameters())
    for n, p in ours.named_parameters():
        g, r = ours.backend.to_numpy(p.grad), hf_grads[n].grad.numpy()
        err = np.linalg.norm(g - r)
        assert err <= 1e-3 * np.linalg.norm(r) + 1e-6 * scale, f"{n}: gradient error {err:.2e} vs norm {np.linalg.norm(r):.2e}"
    return scale


def test_save_pretrained_loads_in_transformers(minilm_path, batch, tmp_path):
    ours = BertModel.from_pretrained(minilm_path, backend="numpy")
    ours.save_pretrained(tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "model.safetensors"]
    hf = transformers.BertModel.from_pretrained(str(tmp_path / "ours"), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in batch.items()})
    with md.no_grad():
        out = ours(**batch)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), ref.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(out.pooler_output.numpy(), ref.pooler_output.numpy(), atol=1e-4)


def test_task_model_round_trip_with_transformers(minilm_path, batch, tmp_path):
    md.manual_seed(0)
    clf = BertForSequenceClassification.from_pretrained(minilm_path, backend="numpy", num_labels=3)
    assert clf.loading_info["newly_initialized"] == ["classifier.weight", "classifier.bias"]
    clf.save_pretrained(tmp_path / "clf")
    hf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "clf"),
                                                                    attn_implementation="eager").eval()
    assert hf.config.num_labels == 3
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    with md.no_grad():
        out = clf(**batch).logits.numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)

    # and the reverse: a checkpoint transformers saved, with the bert. prefix, loads into ours
    hf.save_pretrained(str(tmp_path / "from_hf"))
    back = BertForSequenceClassification.from_pretrained(tmp_path / "from_hf", backend="numba")
    assert back.loading_info["newly_initialized"] == []
    with md.no_grad():
        np.testing.assert_allclose(back(**batch).logits.numpy(), ref, atol=1e-4)
    # a task checkpoint loads into the bare encoder (prefix stripped, head ignored)
    base = BertModel.from_pretrained(tmp_path / "from_hf", backend="numpy")
    assert "classifier.weight" in base.loading_info["ignored"]


def test_token_classification_loss_matches_transformers(minilm_path, batch, tmp_path):
    md.manual_seed(0)
    tc = BertForTokenClassification.from_pretrained(minilm_path, backend="numpy", num_labels=4)
    tc.save_pretrained(tmp_path / "tc")
    hf = transformers.BertForTokenClassification.from_pretrained(str(tmp_path / "tc"),
                                                                 attn_implementation="eager").eval()
    labels = np.where(batch["attention_mask"] == 1, np.arange(batch["input_ids"].size).reshape(batch["input_ids"].shape) % 4, -100)
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(labels))
    with md.no_grad():
        out = tc(**batch, labels=labels)
    np.testing.assert_allclose(out.loss.item(), ref.loss.item(), rtol=1e-5)
    np.testing.assert_allclose(out.logits.numpy(), ref.logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("name", ALL_BACKENDS)
@pytest.mark.parametrize("head", ["token", "qa"])
def test_token_and_qa_heads_match_transformers_with_gradients(minilm_path, batch, tmp_path, name, head):
    """Both heads on the real checkpoint: logits, loss and every gradient against transformers."""
    ours_cls, hf_cls = ((BertForTokenClassification, transformers.BertForTokenClassification) if head == "token" else
                        (BertForQuestionAnswering, transformers.BertForQuestionAnswering))
    md.manual_seed(0)
    kw = {"num_labels": 5} if head == "token" else {}
    ours_cls.from_pretrained(minilm_path, backend="numpy", **kw).save_pretrained(tmp_path / head)
    hf = hf_cls.from_pretrained(str(tmp_path / head), attn_implementation="eager").eval()
    ours = ours_cls.from_pretrained(tmp_path / head, backend=name).eval()
    assert ours.loading_info["newly_initialized"] == []
    shape = batch["input_ids"].shape
    if head == "token":
        labels = np.where(batch["attention_mask"] == 1, np.arange(np.prod(shape)).reshape(shape) % 5, -100)
        targets, hf_targets = {"labels": labels}, {"labels": torch.tensor(labels)}
    else:
        span = np.array([[1, 3], [2, 2], [4, 9], [0, 0]])
        span[2, 1] = shape[1] + 5  # outside the sequence: ignored by both
        targets = {"labels": span}
        hf_targets = {"start_positions": torch.tensor(span[:, 0]), "end_positions": torch.tensor(span[:, 1])}
    ref = hf(**{k: torch.tensor(v) for k, v in batch.items()}, **hf_targets)
    ref.loss.backward()
    out = ours(**batch, **targets)
    out.loss.backward()
    np.testing.assert_allclose(out.loss.item(), ref.loss.item(), rtol=1e-5)
    if head == "token":
        np.testing.assert_allclose(out.logits.numpy(), ref.logits.detach().numpy(), atol=1e-4)
    else:
        np.testing.assert_allclose(out.start_logits.numpy(), ref.start_logits.detach().numpy(), atol=1e-4)
        np.testing.assert_allclose(out.end_logits.numpy(), ref.end_logits.detach().numpy(), atol=1e-4)
    hf_grads = dict(hf.named_parameters())
    checked = 0
    for n, p in ours.named_parameters():
        g = hf_grads[n].grad
        if g is None:
            continue
        scale = max(float(g.abs().max()), 1e-3)
        np.testing.assert_allclose(ours.backend.to_numpy(p.grad), g.numpy(), atol=2e-4 * scale, err_msg=n)
        checked += 1
    assert checked == len(hf_grads)  # every parameter has its gradient compared


def test_pytorch_bin_checkpoint_loads_safely(minilm_path, batch, tmp_path, hf_model):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(minilm_path / "config.json", folder)
    torch.save(hf_model.state_dict(), folder / "pytorch_model.bin")
    ours = BertModel.from_pretrained(folder, backend="numpy")
    with md.no_grad():
        out = ours(**batch).last_hidden_state.numpy()
    with torch.no_grad():
        ref = hf_model(**{k: torch.tensor(v) for k, v in batch.items()}).last_hidden_state.numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


# ---------------------------------------------------------------- bad input
def test_missing_and_corrupt_checkpoints_raise_clear_errors(minilm_path, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        BertModel.from_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        BertModel.from_pretrained(empty)
    shutil.copy(minilm_path / "config.json", empty)
    with pytest.raises(CheckpointError, match="no weights"):
        BertModel.from_pretrained(empty)
    (empty / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        BertModel.from_pretrained(empty)
    (empty / "pytorch_model.bin").write_bytes(b"garbage")
    (empty / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights_only"):
        BertModel.from_pretrained(empty)


def test_config_weight_mismatch_names_the_keys(minilm_path, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(minilm_path, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 1024
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight: checkpoint \(1536, 384\) vs model \(1024, 384\)"):
        BertModel.from_pretrained(folder)
    cfg["intermediate_size"] = 1536
    cfg["num_hidden_layers"] = 7
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lacks weights.*encoder.layer.6"):
        BertModel.from_pretrained(folder)


def test_bad_inputs_raise_clear_errors(minilm_path):
    m = BertModel.from_pretrained(minilm_path, backend="numpy")
    with pytest.raises(ValueError, match="input_ids must lie in"):
        m(np.array([[101, 40000, 102]]))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        m(np.ones((1, 513), dtype=np.int64))
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, tokens\)"):
        m(np.array([101, 102]))
    with pytest.raises(ValueError, match="hidden_size.*multiple"):
        BertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="describes a 'gpt2' model"):
        BertConfig.from_dict({"model_type": "gpt2"})
    a = md.Tensor(np.ones(3, dtype=np.float32), backend="numpy")
    b = md.Tensor(np.ones(3, dtype=np.float32), backend="torch")
    with pytest.raises(md.core.BackendMismatchError, match="different backends"):
        F.add(a, b)


def test_failed_save_keeps_the_previous_checkpoint(minilm_path, tmp_path, monkeypatch):
    m = BertModel.from_pretrained(minilm_path, backend="numpy")
    target = m.save_pretrained(tmp_path / "ckpt")
    before = (target / "model.safetensors").read_bytes()
    import safetensors.numpy

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        m.save_pretrained(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]  # no temp files left


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_mean_pooling_matches_transformers_by_hand(minilm_path, batch, hf_model, name, tmp_path):
    """``classifier_pooling="mean"``: the pooler reads the mean over real tokens. Reference:
    transformers' hidden states, mean-pooled by hand (sentence-transformers' formula), through
    its own pooler dense + tanh; outputs and the gradients of every parameter."""
    ours = BertModel.from_pretrained(minilm_path, backend=name, classifier_pooling="mean")
    w = np.random.default_rng(1).standard_normal((batch["input_ids"].shape[0], 384)).astype(np.float32)
    out = ours(**batch)
    loss = (out.pooler_output * md.Tensor(ours.backend.asarray(w), backend=ours.backend)).sum()
    loss.backward()

    hf_model.zero_grad()
    h = hf_model(**{k: torch.tensor(v) for k, v in batch.items()}).last_hidden_state  # (B, T, D)
    m = torch.tensor(batch["attention_mask"], dtype=h.dtype)[:, :, None]  # (B, T, 1)
    ref = torch.tanh(hf_model.pooler.dense((h * m).sum(1) / m.sum(1).clamp(min=1e-9)))  # (B, D)
    (ref * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(out.pooler_output.numpy(), ref.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(loss.item(), (ref * torch.tensor(w)).sum().item(), rtol=1e-4)
    _assert_gradients_match(ours, hf_model)

    # CLS pooling of the same checkpoint reads another vector: the option really changes the model
    with md.no_grad():
        cls = BertModel.from_pretrained(minilm_path, backend=name)(**batch).pooler_output.numpy()
    assert np.abs(cls - ref.detach().numpy()).max() > 1e-2

    # saved and loaded back, the choice stays; transformers still reads the checkpoint
    ours.save_pretrained(tmp_path / "mean")
    assert json.loads((tmp_path / "mean" / "config.json").read_text())["classifier_pooling"] == "mean"
    back = BertModel.from_pretrained(tmp_path / "mean", backend=name)
    assert back.config.classifier_pooling == "mean"
    with md.no_grad():
        np.testing.assert_allclose(back(**batch).pooler_output.numpy(), out.pooler_output.numpy(), atol=1e-6)
    transformers.BertModel.from_pretrained(str(tmp_path / "mean"))
