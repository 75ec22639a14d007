"""Optimisers against torch.optim on the same gradients."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.models import BertConfig, BertForSequenceClassification
from minidistill.train import SGD, AdamW, param_groups

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _tiny(seed=0):
    md.manual_seed(seed)
    cfg = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=16, num_labels=3)
    return BertForSequenceClassification(cfg)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_optimizers_match_torch(backend, kind):
    model = _tiny()
    model.to(backend, dtype="float64")
    ref = {n: torch.tensor(p.numpy(), requires_grad=True) for n, p in model.named_parameters()}
    if kind == "adamw":
        ours = AdamW(param_groups(model, 0.1), lr=1e-2)
        groups = [{"params": [ref[n] for n, _ in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)],
                   "weight_decay": 0.1},
                  {"params": [ref[n] for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n],
                   "weight_decay": 0.0}]
        theirs = torch.optim.AdamW(groups, lr=1e-2)
    else:
        ours = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        theirs = torch.optim.SGD(list(ref.values()), lr=0.1, momentum=0.9, weight_decay=0.01)
    rng = np.random.default_rng(0)
    for step in range(4):
        grads = {n: rng.standard_normal(p.shape) for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = backend.asarray(grads[n])
            ref[n].grad = torch.tensor(grads[n])
        ours.step()
        theirs.step()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.numpy(), ref[n].detach().numpy(), atol=1e-12, rtol=1e-10, err_msg=n)


def test_adamw_state_dict_round_trip(cpu_backend):
    a, b = _tiny(1), _tiny(1)
    oa, ob = AdamW(a.parameters(), lr=1e-2), AdamW(b.parameters(), lr=1e-2)
    for p in a.parameters():
        p.grad = np.ones(p.shape, dtype=p.dtype)
    oa.step()
    for p, q in zip(a.parameters(), b.parameters()):
        q.data = p.data.copy()
    ob.load_state_dict(oa.state_dict())
    for opt, model in ((oa, a), (ob, b)):
        for p in model.parameters():
            p.grad = np.full(p.shape, 0.5, dtype=p.dtype)
        opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_no_decay_groups_and_bad_hyperparameters():
    groups = param_groups(_tiny(), 0.01)
    assert all(p.ndim == 2 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])
    with pytest.raises(ValueError, match="invalid AdamW"):
        AdamW(_tiny().parameters(), lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
