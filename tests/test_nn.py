"""Module mechanics and layer gradients."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.models import BertConfig, BertModel
from minidistill.nn import Dropout, Embedding, LayerNorm, Linear, Module, MultiHeadSelfAttention, Parameter, StateDictError

from .conftest import CPU_BACKENDS_LONG


class Tied(Module):
    def __init__(self):
        self.a = Linear(3, 3)
        self.b = Linear(3, 3)
        self.b.weight = self.a.weight  # shared
        self.drop = Dropout(0.5)


def test_shared_parameters_are_counted_once():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["a.weight", "a.bias", "b.bias"]
    assert m.num_parameters() == 9 + 3 + 3
    assert len(list(m.named_parameters(remove_duplicate=False))) == 4


def test_load_state_dict_names_missing_unexpected_and_misshaped_keys():
    m = Tied()
    state = {k: np.asarray(v) for k, v in m.state_dict().items()}
    state.pop("a.bias")
    state["extra.weight"] = np.zeros(2)
    with pytest.raises(StateDictError, match="missing keys: a.bias") as e:
        m.load_state_dict(state)
    assert "unexpected keys: extra.weight" in str(e.value)
    bad = {k: np.asarray(v) for k, v in m.state_dict().items()}
    bad["b.bias"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(StateDictError, match=r"b.bias: checkpoint \(4,\) vs model \(3,\)"):
        m.load_state_dict(bad)
    info = m.load_state_dict({"a.bias": np.ones(3)}, strict=False)
    assert np.all(m.a.bias.numpy() == 1) and "a.weight" in info["missing"]


def test_train_eval_switch_dropout():
    m = Tied()
    x = md.Tensor(np.ones((4, 3), dtype=np.float32))
    m.eval()
    assert m.drop(x) is x and not m.a.training
    m.train()
    assert np.any(m.drop(x).numpy() == 0)


def test_to_moves_every_parameter(backend):
    m = Tied()
    m.to(backend)
    assert all(p.backend is backend for p in m.parameters())
    m.to(dtype="float64")
    assert all(p.dtype == np.float64 for p in m.parameters())


def _f64(module):
    module.to(dtype="float64")
    return module


def test_layer_gradchecks(cpu_backend):
    md.manual_seed(0)
    x = md.Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
    lin = _f64(Linear(4, 5))
    assert md.gradcheck(lambda x, w, b: lin(x), x, lin.weight, lin.bias)
    ln = _f64(LayerNorm(4, eps=1e-5))
    assert md.gradcheck(lambda x, w, b: ln(x), x, ln.weight, ln.bias)
    emb = _f64(Embedding(6, 4))
    assert md.gradcheck(lambda w: emb(np.array([[0, 5, 5]])), emb.weight)
    att = _f64(MultiHeadSelfAttention(4, 2))
    mask = np.ones((2, 1, 1, 3), dtype=bool)
    mask[1, ..., 2] = False
    params = [p for _, p in att.named_parameters()]
    assert md.gradcheck(lambda x, *ps: att(x, mask)[0], x, *params)


@pytest.mark.parametrize("backend_name", CPU_BACKENDS_LONG)
def test_bert_layer_gradcheck_on_a_tiny_config(backend_name):
    with md.use_backend(backend_name):
        _bert_layer_gradcheck_on_a_tiny_config()


def _bert_layer_gradcheck_on_a_tiny_config():
    md.manual_seed(1)
    cfg = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=8, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    m = _f64(BertModel(cfg))
    ids = np.array([[1, 4, 7, 2], [3, 3, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    params = [p for _, p in m.named_parameters()]
    assert md.gradcheck(lambda *ps: m(ids, attention_mask=mask).pooler_output, *params, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("backend_name", CPU_BACKENDS_LONG)
def test_mean_pooling_gradcheck_and_padding_invariance(backend_name):
    with md.use_backend(backend_name):
        _mean_pooling_gradcheck_and_padding_invariance()


def _mean_pooling_gradcheck_and_padding_invariance():
    """Mean pooling in float64: central differences agree with backward, and padding a batch
    further (more [PAD] tokens, masked out) changes no pooled vector; [CLS] pooling gives the
    first token's vector instead, and both read the same encoder."""
    md.manual_seed(2)
    cfg = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=8, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, classifier_pooling="mean")
    m = _f64(BertModel(cfg))
    ids = np.array([[1, 4, 7, 2], [3, 3, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    params = [p for _, p in m.named_parameters()]
    assert md.gradcheck(lambda *ps: m(ids, attention_mask=mask).pooler_output, *params, atol=1e-5, rtol=1e-3)
    with md.no_grad():
        out = m(ids, attention_mask=mask)
        wider = m(np.pad(ids, ((0, 0), (0, 3))), attention_mask=np.pad(mask, ((0, 0), (0, 3))))
        h = out.last_hidden_state.numpy()
        by_hand = np.tanh(np.stack([h[0].mean(0), h[1, :2].mean(0)]) @ m.pooler.dense.weight.numpy().T
                          + m.pooler.dense.bias.numpy())
        np.testing.assert_allclose(out.pooler_output.numpy(), by_hand, atol=1e-12)
        np.testing.assert_allclose(wider.pooler_output.numpy(), out.pooler_output.numpy(), atol=1e-12)
        m.pooler.pooling = "cls"
        first = np.tanh(h[:, 0] @ m.pooler.dense.weight.numpy().T + m.pooler.dense.bias.numpy())
        np.testing.assert_allclose(m(ids, attention_mask=mask).pooler_output.numpy(), first, atol=1e-12)
    m.pooler.pooling = "mean"
    with pytest.raises(ValueError, match="attention_mask shape"):
        m.pooler(out.last_hidden_state, mask[:, :3])


def test_classifier_pooling_is_validated_and_written_only_when_not_bert_default():
    assert "classifier_pooling" not in BertConfig().to_dict()  # HF checkpoints round-trip unchanged
    cfg = BertConfig(classifier_pooling="mean")
    assert BertConfig.from_dict(cfg.to_dict()).classifier_pooling == "mean"
    for bad in ("max", None, 1):
        with pytest.raises(ValueError, match="classifier_pooling"):
            BertConfig(classifier_pooling=bad)


def test_parameter_repr_and_requires_grad():
    p = Parameter(np.zeros((2, 2), dtype=np.float32))
    assert p.requires_grad and "shape=(2, 2)" in repr(p)
    with pytest.raises(TypeError, match="only float tensors"):
        md.Tensor(np.array([1, 2]), requires_grad=True)


def test_load_state_dict_accepts_torch_tensors_of_any_float_dtype():
    torch = pytest.importorskip("torch")
    lin = Linear(3, 2)
    state = {"weight": torch.ones(2, 3, dtype=torch.bfloat16), "bias": torch.zeros(2, dtype=torch.float64)}
    lin.load_state_dict(state)
    assert lin.weight.dtype == np.float32 and np.all(lin.weight.numpy() == 1.0)


def test_load_state_dict_copies_and_never_aliases(backend):
    lin = Linear(3, 2)
    lin.to(backend)
    source = {"weight": np.ones((2, 3), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)}
    lin.load_state_dict(source)
    source["weight"][:] = 7.0  # the caller's array changes afterwards…
    assert np.all(lin.weight.numpy() == 1.0)  # …the parameter does not
    other = Linear(3, 2)
    other.to(backend)
    other.load_state_dict(lin.state_dict())
    lin.weight.data *= 0  # in-place update of one model (as AdamW does)
    assert np.all(other.weight.numpy() == 1.0)
