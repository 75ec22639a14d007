"""``BertForMaskedLM`` against transformers' (random-initialised, saved by transformers) on every
backend: logits, loss with -100 ignored, every gradient; round trips both ways; the decoder
stays tied to the word embeddings through loading and saving."""

from __future__ import annotations

import os

import numpy as np
import pytest

import minidistill as md
from minidistill.fileio import CheckpointError
from minidistill.models import BertForMaskedLM, load_model

from .conftest import ALL_BACKENDS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.torch

IDS = np.array([[2, 5, 7, 9, 3, 0], [2, 11, 4, 3, 0, 0]])
MASK = (IDS != 0).astype(np.int64)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-mlm")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=24, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():  # a non-zero bias, so that a lost tie or bias would show
        model.cls.predictions.bias.normal_(0, 0.5)
    model.eval().save_pretrained(folder)
    return folder


def _labels():
    labels = np.full(IDS.shape, -100)
    labels[0, 1], labels[0, 3], labels[1, 2] = 5, 30, 4  # three masked positions, the rest ignored
    return labels


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_masked_lm_matches_transformers_with_every_gradient(hf_folder, name):
    hf = transformers.BertForMaskedLM.from_pretrained(str(hf_folder), attn_implementation="eager").eval()
    ref = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), labels=torch.tensor(_labels()))
    ref.loss.backward()
    ours = BertForMaskedLM.from_pretrained(hf_folder, backend=name)
    assert ours.loading_info == {"newly_initialized": [], "ignored": []}
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    out = ours(input_ids=IDS, attention_mask=MASK, labels=_labels())
    out.loss.backward()
    np.testing.assert_allclose(out.logits.numpy(), ref.logits.detach().numpy(), atol=1e-4)
    assert abs(out.loss.item() - ref.loss.item()) < 1e-5
    theirs = dict(hf.named_parameters())
    for n, p in ours.named_parameters():  # the tied table once: its gradient sums both uses
        g = theirs[n].grad
        np.testing.assert_allclose(ours.backend.to_numpy(p.grad), g.numpy(), atol=1e-5 + 1e-4 * float(g.abs().max()),
                                   err_msg=n)


def test_round_trips_keep_the_tie_and_the_outputs(hf_folder, tmp_path):
    ours = BertForMaskedLM.from_pretrained(hf_folder, backend="numpy")
    ours.save_pretrained(tmp_path / "ours")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "np") as f:
        keys = set(f.keys())
    assert "cls.predictions.decoder.weight" not in keys and "cls.predictions.bias" in keys  # as transformers stores it
    hf = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "ours"), attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    with md.no_grad():
        np.testing.assert_allclose(ours(input_ids=IDS, attention_mask=MASK).logits.numpy(), theirs, atol=1e-5)
    back = load_model(tmp_path / "ours", backend="numpy")
    assert type(back) is BertForMaskedLM
    assert back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight
    assert back.cls.predictions.decoder.bias is back.cls.predictions.bias
    back.to(dtype="float64")  # a cast keeps the tie
    assert back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight


def test_checkpoints_with_the_decoder_stored_again_and_without_a_head(hf_folder, tmp_path, minilm_path):
    import shutil

    from minidistill.fileio import load_weights, save_weights

    weights = load_weights(hf_folder)
    for name, tie_ok in (("same", True), ("other", False)):  # older transformers stored the tied decoder too
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(hf_folder / "config.json", folder)
        extra = weights["bert.embeddings.word_embeddings.weight"] * (1.0 if tie_ok else 2.0)
        save_weights(folder / "model.safetensors", {**weights, "cls.predictions.decoder.weight": extra})
        if tie_ok:
            assert BertForMaskedLM.from_pretrained(folder).loading_info["newly_initialized"] == []
        else:
            with pytest.raises(CheckpointError, match="decoder.weight differs from bert.embeddings.word_embeddings"):
                BertForMaskedLM.from_pretrained(folder)
    # a sentence-embedding checkpoint has no cls.*: the head starts fresh, the decoder is its table
    fresh = BertForMaskedLM.from_pretrained(minilm_path, backend="numpy")
    assert set(fresh.loading_info["newly_initialized"]) == set(fresh.head_parameter_names())
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight


def test_kd_on_masked_lm_logits_counts_the_masked_positions_only(hf_folder, minilm_path):
    """SoftKD between masked-LM models on a masked batch is the mean KL over the masked
    positions: other positions and further padding change nothing."""
    from minidistill.compress import SoftKD
    from minidistill.data import Tokenizer
    from minidistill.data.masking import MaskingCollator

    tok = Tokenizer.from_pretrained(minilm_path)
    teacher = BertForMaskedLM.from_pretrained(hf_folder, backend="numpy", dtype="float64")
    student = BertForMaskedLM.from_pretrained(hf_folder, backend="numpy", dtype="float64")
    for p in student.parameters():  # a different student
        p.data = p.data * 0.9
    batch = {"input_ids": IDS, "attention_mask": MASK}
    coll = MaskingCollator(tok, probability=0.5, seed=1)
    coll.special = np.zeros(50, bool)
    coll.special[[0, 2, 3]] = True  # this toy vocabulary's [PAD], [CLS], [SEP]
    coll.mask_id, coll.normal_ids = 1, np.arange(4, 50)
    masked = coll(batch, 0)
    assert masked["token_mask"].sum() > 0
    with md.no_grad():
        t = teacher(input_ids=masked["input_ids"], attention_mask=MASK)
        s = student(input_ids=masked["input_ids"], attention_mask=MASK)
    loss = SoftKD(temperature=1.0)(s, t, masked).item()
    keep = masked["token_mask"] == 1
    p = torch.softmax(torch.tensor(t.logits.numpy()[keep]), -1)
    ref = torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(s.logits.numpy()[keep]), -1), p,
                                     reduction="batchmean").item()
    assert abs(loss - ref) < 1e-10
    wide = {k: np.pad(v, ((0, 0), (0, 3))) for k, v in masked.items() if k != "example_ids"}
    with md.no_grad():
        t2 = teacher(input_ids=wide["input_ids"], attention_mask=wide["attention_mask"])
        s2 = student(input_ids=wide["input_ids"], attention_mask=wide["attention_mask"])
    assert abs(SoftKD(temperature=1.0)(s2, t2, wide).item() - loss) < 1e-12


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_decoding_the_masked_positions_only_equals_the_full_head(hf_folder, name):
    """``masked_positions`` decodes only those rows: logits equal the full logits' rows, the loss
    and every gradient equal the full head's (the other positions have label -100)."""
    labels = _labels()
    keep = labels != -100
    full = BertForMaskedLM.from_pretrained(hf_folder, backend=name, dtype="float64")
    sparse = BertForMaskedLM.from_pretrained(hf_folder, backend=name, dtype="float64")
    a = full(input_ids=IDS, attention_mask=MASK, labels=labels)
    b = sparse(input_ids=IDS, attention_mask=MASK, labels=labels, masked_positions=keep)
    assert b.logits.shape == (int(keep.sum()), 50)
    np.testing.assert_allclose(b.logits.numpy(), a.logits.numpy()[keep], atol=1e-12)
    a.loss.backward()
    b.loss.backward()
    assert abs(a.loss.item() - b.loss.item()) < 1e-12
    for (n, p), (_, q) in zip(full.named_parameters(), sparse.named_parameters()):
        np.testing.assert_allclose(q.backend.to_numpy(q.grad), p.backend.to_numpy(p.grad), atol=1e-12, err_msg=n)
    with pytest.raises(ValueError, match="masked_positions has shape"):
        sparse(input_ids=IDS, attention_mask=MASK, masked_positions=keep[:, :3])


def _objective_cases():
    from minidistill.compress import (AttentionKL, AttentionProbMSE, AttentionScoreMSE, HiddenCosine, HiddenMSE,
                                      LayerMap, LogitMSE, MiniLMv2Relations, SoftKD, ValueRelationKL)

    hmap = LayerMap.build("uniform", 1, 2, "hidden")
    amap = LayerMap.build("uniform", 1, 2, "attention")
    last = LayerMap.build("last", 1, 2, "attention")
    return {"soft_kd": lambda: SoftKD(temperature=2.0), "logit_mse": lambda: LogitMSE(),
            "hidden_mse": lambda: HiddenMSE(hmap, 16, 16), "hidden_cosine": lambda: HiddenCosine(hmap, 16, 16),
            "attention_mse": lambda: AttentionScoreMSE(amap), "attention_kl": lambda: AttentionKL(amap),
            "attention_prob_mse": lambda: AttentionProbMSE(amap), "value_relation": lambda: ValueRelationKL(last),
            "minilm_v2": lambda: MiniLMv2Relations(last, 2)}


@pytest.mark.parametrize("name", sorted(_objective_cases()))
def test_every_objective_on_masked_lm_outputs_passes_gradcheck(hf_folder, name):
    """float64 finite differences through a 1-layer BertForMaskedLM student decoding the masked
    positions only, against a 2-layer masked-LM teacher, for each objective of the general setting."""
    from minidistill.compress import needed_outputs
    from minidistill.compress.student import make_student

    teacher = BertForMaskedLM.from_pretrained(hf_folder, backend="numpy", dtype="float64").eval()
    student = make_student(teacher, num_layers=1, init="lower").eval()
    for p in student.parameters():
        p.data = p.data * 0.9  # not the teacher
    obj = _objective_cases()[name]()
    flags = needed_outputs([obj])
    keep = _labels() != -100
    batch = {"input_ids": IDS, "attention_mask": MASK, "token_mask": keep.astype(np.int64)}
    with md.no_grad():
        t_out = teacher(IDS, MASK, masked_positions=keep, **flags)
    layer = student.bert.encoder.layer[0]
    leaves = [layer.attention.self.query.weight, layer.output.dense.bias, student.cls.predictions.transform.dense.weight]

    def f(*_):
        return obj(student(IDS, MASK, masked_positions=keep, **flags), t_out, batch)

    assert md.gradcheck(f, *leaves)
