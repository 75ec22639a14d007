"""Module 3: BERT from its parts, checked against transformers with the same weights."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.models import BertConfig, BertModel
from minidistill.models.bert import _normalise_keys, keep_mask_from_attention_mask

from .conftest import rng

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.bert import modeling_bert as hf  # noqa: E402

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=20, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def pair():
    """A random transformers BertModel (float64, eval) and ours holding the same weights,
    copied by name (without the checkpoint loader of task 3.5)."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY)
    cfg._attn_implementation = "eager"
    theirs = transformers.BertModel(cfg).double().eval()
    with md.use_backend("numpy"):
        ours = BertModel(BertConfig(**TINY)).to(dtype="float64").eval()
    state = {k: v.numpy() for k, v in theirs.state_dict().items() if k in dict(ours.named_parameters())}
    ours.load_state_dict(state)
    return theirs, ours


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.task3_1
@pytest.mark.parametrize("with_types", [False, True])
def test_embeddings_match_transformers(pair, with_types):
    theirs, ours = pair
    ids = rng(0).integers(0, 50, (2, 7))
    types = rng(1).integers(0, 2, (2, 7)) if with_types else None
    want = theirs.embeddings(input_ids=torch.tensor(ids),
                             token_type_ids=None if types is None else torch.tensor(types)).detach().numpy()
    got = ours.embeddings(ids, types).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.task3_1
def test_embedding_sum_uses_given_positions(pair):
    _, ours = pair
    ids = rng(0).integers(0, 50, (1, 4))
    pos = np.array([[3, 2, 1, 0]])
    emb = ours.embeddings
    got = emb.embedding_sum(ids, None, pos).numpy()
    want = emb.word_embeddings.weight.numpy()[ids] + emb.token_type_embeddings.weight.numpy()[0] \
        + emb.position_embeddings.weight.numpy()[pos]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.task3_2
def test_keep_mask_drops_padded_keys_for_every_query():
    am = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    keep = keep_mask_from_attention_mask(am, md.get_backend("numpy"))
    assert keep.shape == (2, 1, 1, 5) and keep.dtype == np.bool_
    np.testing.assert_array_equal(keep[:, 0, 0], am == 1)
    # It broadcasts over heads and queries: a masked softmax of (B, H, T, T) scores puts no
    # probability on padded keys, as transformers' additive mask does.
    scores = torch.tensor(rng(0).standard_normal((2, 2, 5, 5)))
    ours = torch.softmax(scores.masked_fill(~torch.tensor(np.asarray(keep)), float("-inf")), -1)
    additive = torch.tensor((1.0 - am[:, None, None, :]) * torch.finfo(torch.float64).min)
    np.testing.assert_allclose(ours.numpy(), torch.softmax(scores + additive, -1).numpy(), atol=1e-300)


@pytest.mark.task3_2
def test_keep_mask_treats_any_nonzero_as_a_token():
    keep = keep_mask_from_attention_mask(np.array([[2, 1, 0]]), md.get_backend("numpy"))
    np.testing.assert_array_equal(keep.reshape(-1), [True, True, False])


@pytest.mark.task3_3
def test_layer_matches_transformers(pair):
    theirs, ours = pair
    x = rng(0).standard_normal((2, 5, 16))
    keep = np.array([[True] * 5, [True, True, True, False, False]]).reshape(2, 1, 1, 5)
    additive = torch.tensor(np.where(keep, 0.0, torch.finfo(torch.float64).min))
    for i in range(2):
        want = _first(theirs.encoder.layer[i](torch.tensor(x), attention_mask=additive)).detach().numpy()
        got, probs, _, _ = ours.encoder.layer[i](md.Tensor(x, backend="numpy"), keep)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-11)
        assert probs.shape == (2, 2, 5, 5)


@pytest.mark.task3_4
def test_pooler_matches_transformers(pair):
    theirs, ours = pair
    h = rng(0).standard_normal((3, 4, 16))
    want = theirs.pooler(torch.tensor(h)).detach().numpy()
    np.testing.assert_allclose(ours.pooler(md.Tensor(h, backend="numpy")).numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.task3_5
def test_old_layer_norm_names_are_read():
    w = {"bert.embeddings.LayerNorm.gamma": np.ones(2), "bert.embeddings.LayerNorm.beta": np.zeros(2),
         "bert.pooler.dense.weight": np.eye(2), "cls.gamma_table": np.ones(1)}
    out = _normalise_keys(w)
    assert set(out) == {"bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias",
                        "bert.pooler.dense.weight", "cls.gamma_table"}
    assert out["bert.embeddings.LayerNorm.weight"] is w["bert.embeddings.LayerNorm.gamma"]


@pytest.mark.task3_5
def test_a_checkpoint_with_gamma_beta_names_loads(pair, tmp_path):
    from safetensors.numpy import save_file

    theirs, _ = pair
    state = {k: v.numpy().copy() for k, v in theirs.state_dict().items()}
    renamed = {(k[:-6] + "gamma" if k.endswith("LayerNorm.weight") else k[:-4] + "beta"
                if k.endswith("LayerNorm.bias") else k): v for k, v in state.items()}
    theirs.config.to_json_file(str(tmp_path / "config.json"))
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = BertModel.from_pretrained(tmp_path, backend="numpy", dtype="float64")
    params = dict(loaded.named_parameters())
    for k in ("embeddings.LayerNorm.weight", "encoder.layer.1.output.LayerNorm.bias"):
        np.testing.assert_array_equal(params[k].numpy(), state[k])
