"""PHM layers and Compacter adapters: the Kronecker forward against an explicit ``np.kron``
weight, gradchecks, torch autograd parity, the shared rule's gradient, parameter counts
against the paper's formulas, adapter-only training, fold, and saving the shared rule once."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

import minidistill as md
from minidistill.compress import compacter, compacter_parameter_count, fold
from minidistill.nn import functional as F
from minidistill.data import TextDataset, Tokenizer
from minidistill.models import BertConfig, BertForSequenceClassification, CheckpointError
from minidistill.nn import Adapter, AdapterConfig, PHMLinear, add_adapters, adapter_parameters, phm_rule
from minidistill.train import Trainer, TrainConfig

from .conftest import IDS, MASK, rand, randomise, toy_teacher


def _explicit_weight(rule, s, t):
    """Σ_i A_i ⊗ (s_i t_iᵀ) with NumPy's own Kronecker product."""
    return sum(np.kron(rule[i], np.outer(s[i], t[i])) for i in range(rule.shape[0]))


@pytest.mark.parametrize("n, d_in, d_out", [(4, 24, 12), (2, 6, 10), (3, 9, 9)])
def test_phm_forward_equals_the_explicit_kronecker_weight(backend, n, d_in, d_out):
    rule, s, t = rand((n, n, n), 0), rand((n, d_out // n), 1), rand((n, d_in // n), 2)
    x, b = rand((2, 5, d_in), 3), rand((d_out,), 4)
    w = _explicit_weight(rule, s, t)  # (out, in)
    args = [md.tensor(a, dtype="float64") for a in (x, rule, s, t, b)]
    np.testing.assert_allclose(F.phm_linear(*args).numpy(), x @ w.T + b, atol=1e-12, rtol=0)
    np.testing.assert_allclose(F.kron_weight(*args[1:4]).numpy(), w, atol=1e-13, rtol=0)


def test_phm_gradcheck(backend):
    n, d_in, d_out = 4, 16, 8
    args = [md.tensor(a, dtype="float64", requires_grad=True)
            for a in (rand((3, d_in), 0), rand((n, n, n), 1), rand((n, d_out // n), 2), rand((n, d_in // n), 3),
                      rand((d_out,), 4))]
    assert md.gradcheck(F.phm_linear, *args)
    assert md.gradcheck(F.kron_weight, *args[1:4])


@pytest.mark.torch
def test_phm_matches_torch_autograd(backend):
    """Outputs and every gradient against torch.kron and autograd (an independent implementation)."""
    import torch

    n, d_in, d_out = 4, 24, 12
    vals = [rand((2, 3, d_in), 0), rand((n, n, n), 1), rand((n, d_out // n), 2), rand((n, d_in // n), 3),
            rand((d_out,), 4)]
    g = rand((2, 3, d_out), 5)
    ours = [md.tensor(v, dtype="float64", requires_grad=True) for v in vals]
    y = F.phm_linear(*ours)
    (y * md.tensor(g, dtype="float64")).sum().backward()
    th = [torch.tensor(v, requires_grad=True) for v in vals]
    w = sum(torch.kron(th[1][i], torch.outer(th[2][i], th[3][i])) for i in range(n))
    yt = th[0] @ w.T + th[4]
    (yt * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), atol=1e-12, rtol=0)
    for a, b in zip(ours, th):
        np.testing.assert_allclose(a.backend.to_numpy(a.grad), b.grad.numpy(), atol=1e-11, rtol=0)


def test_shared_rule_gradient_accumulates_from_every_layer(cpu_backend):
    rule = phm_rule(4)
    rule.data = rule.backend.asarray(rand((4, 4, 4), 0))
    md.manual_seed(0)
    layers = [PHMLinear(8, 8, 4, rule), PHMLinear(8, 4, 4, rule)]
    for lay in layers:
        lay.to(dtype="float64")
    assert layers[0].phm_rule is layers[1].phm_rule
    x = md.tensor(rand((3, 8), 1), dtype="float64")
    alone = []
    for lay in layers:
        rule.grad = None
        lay(x).sum().backward()
        alone.append(rule.backend.to_numpy(rule.grad).copy())
    rule.grad = None
    (layers[0](x).sum() + layers[1](x).sum()).backward()
    np.testing.assert_allclose(rule.backend.to_numpy(rule.grad), alone[0] + alone[1], atol=1e-12, rtol=0)
    assert np.abs(alone[0]).max() > 0 and np.abs(alone[1]).max() > 0


def _rank_r_weight(rule, s, t, r):
    """Σ_i A_i ⊗ (Σ_j s_ij t_ijᵀ) with np.kron, rows i r + j of the factors."""
    n = rule.shape[0]
    return sum(np.kron(rule[i], sum(np.outer(s[i * r + j], t[i * r + j]) for j in range(r))) for i in range(n))


@pytest.mark.parametrize("rank", [2, 3])
def test_phm_fast_weights_of_higher_rank(backend, rank):
    """``rank`` r: B_i = Σ_j s_ij t_ijᵀ. The layer equals x Wᵀ + b with W from np.kron (float64,
    both the factored and the materialised paths); gradcheck of input, rule, factors and bias;
    the rule's gradient sums over its r repeats; fold is exact."""
    n, d_in, d_out = 4, 16, 8
    md.manual_seed(0)
    lay = PHMLinear(d_in, d_out, n, rank=rank).to(backend=backend, dtype="float64")
    assert tuple(lay.out_factor.shape) == (n * rank, d_out // n) and tuple(lay.in_factor.shape) == (n * rank, d_in // n)
    for i, prm in enumerate((lay.phm_rule, lay.out_factor, lay.in_factor, lay.bias)):
        prm.data = prm.backend.asarray(rand(prm.shape, i))
    w = _rank_r_weight(lay.phm_rule.numpy(), lay.out_factor.numpy(), lay.in_factor.numpy(), rank)  # (out, in)
    assert np.linalg.matrix_rank(w) == min(d_out, n * n * rank)  # more than rank one could reach
    x = rand((2, 3, d_in), 9)
    xt = md.tensor(x, dtype="float64", requires_grad=True)
    np.testing.assert_allclose(lay(xt).numpy(), x @ w.T + lay.bias.numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(lay.weight().numpy(), w, atol=1e-13, rtol=0)
    assert md.gradcheck(lambda x_, *ps: lay(x_), xt, *lay.parameters())
    lay.materialize = True
    np.testing.assert_allclose(lay(xt).numpy(), x @ w.T + lay.bias.numpy(), atol=1e-12, rtol=0)
    lay.materialize = False
    folded = fold(lay)
    assert isinstance(folded, md.nn.Linear)
    np.testing.assert_allclose(folded(xt).numpy(), x @ w.T + lay.bias.numpy(), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        PHMLinear(d_in, d_out, n, rank=0)


def test_compacter_parameter_counts_follow_the_papers_formulas():
    for plus in (False, True):
        model = compacter(toy_teacher(hidden_size=16, num_hidden_layers=3), plus=plus, n=4, reduction=2)
        weights = [(n, p) for n, p in adapter_parameters(model) if not n.endswith("bias")]
        biases = [(n, p) for n, p in adapter_parameters(model) if n.endswith("bias")]
        assert sum(p.size for _, p in weights) == compacter_parameter_count(3, 16, reduction=2, n=4, plus=plus)
        assert sum(p.size for _, p in biases) == (1 if plus else 2) * 3 * (8 + 16)  # k + d per adapter
        # one rule for the whole model, counted once
        assert len({id(p) for n, p in model.named_parameters(remove_duplicate=False) if n.endswith("phm_rule")}) == 1
        ranked = compacter(toy_teacher(hidden_size=16, num_hidden_layers=3), plus=plus, n=4, reduction=2, rank=3)
        assert sum(p.size for n, p in adapter_parameters(ranked) if not n.endswith("bias")) == \
            compacter_parameter_count(3, 16, reduction=2, n=4, plus=plus, rank=3) == \
            3 * (2 if plus else 4) * 3 * (8 + 16) + 4 ** 3


def test_dense_adapters_start_as_identities_and_leave_the_model_unchanged(backend):
    model = toy_teacher()
    randomise(model)
    before = model(IDS, MASK).logits.numpy()
    add_adapters(model, AdapterConfig(reduction=4, placement="houlsby", kind="dense"))
    assert len(adapter_parameters(model)) == 2 * 2 * 4  # 2 layers × 2 sites × (down, up) × (W, b)
    np.testing.assert_allclose(model(IDS, MASK).logits.numpy(), before, atol=1e-12, rtol=0)
    # and they do act once trained (non-zero up-projections)
    randomise(model, seed=2, scale=0.1)
    assert np.abs(model(IDS, MASK).logits.numpy() - before).max() > 1e-3


@pytest.mark.parametrize("pooler", [False, True])
def test_adapter_only_training_leaves_frozen_weights_bit_identical(minilm_path, pooler):
    tok = Tokenizer.from_pretrained(minilm_path)
    model = toy_teacher(dtype="float32", vocab_size=tok.vocab_size, max_position_embeddings=32, num_labels=2)
    compacter(model, n=4, reduction=4, pooler=pooler)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter_names = {n for n, _ in adapter_parameters(model)}
    assert adapter_names <= trained
    head = ("classifier.", "bert.pooler.") if pooler else ("classifier.",)
    assert trained - adapter_names == {n for n, _ in model.named_parameters() if "LayerNorm" in n or n.startswith(head)}
    assert pooler == ("bert.pooler.dense.weight" in trained)
    frozen_before = {n: p.numpy().copy() for n, p in model.named_parameters() if n not in trained}
    trained_before = {n: p.numpy().copy() for n, p in model.named_parameters() if n in trained}
    texts = [f"a {w} film, {v}" for w in ("fine", "dull", "great", "bad") for v in ("truly", "sadly", "oddly", "very")]
    grads_seen = []

    def record(tr):
        grads_seen.append(any(p.grad is not None for n, p in model.named_parameters() if n not in trained))

    trainer = Trainer(model, tok, TextDataset(texts, labels=np.arange(16) % 2), None,
                      TrainConfig(lr=3e-3, max_steps=6, batch_size=4, max_length=16, progress=False),
                      callbacks={"on_step_end": [record]})
    assert {id(p) for p in trainer.optimizer.parameters()} == {id(p) for n, p in model.named_parameters() if n in trained}
    trainer.train()
    assert grads_seen and not any(grads_seen)
    for n, p in model.named_parameters():
        if n in frozen_before:
            np.testing.assert_array_equal(p.numpy(), frozen_before[n])
    params = dict(model.named_parameters())
    assert all(np.abs(params[n].numpy() - v).max() > 0 for n, v in trained_before.items()
               if "phm_rule" in n or "factor" in n or "pooler" in n)


def test_train_pooler_is_refused_where_it_means_nothing():
    from minidistill.cli import ConfigError, FinetuneConfig, _add_finetune_adapters
    from minidistill.models import BertForTokenClassification

    with pytest.raises(ConfigError, match="train_pooler is for adapter fine-tuning"):
        _add_finetune_adapters(toy_teacher(), FinetuneConfig(adapters="none", train_pooler=True), print)
    tagger = BertForTokenClassification(toy_teacher().config)  # built without a pooler
    names = [n for n, _ in tagger.named_parameters()]
    with pytest.raises(ValueError, match="BertForTokenClassification has no pooler"):
        compacter(tagger, pooler=True)
    assert [n for n, _ in tagger.named_parameters()] == names  # refused before any adapter went in


def test_fold_turns_phm_layers_into_dense_ones_exactly(backend):
    model = compacter(toy_teacher(), n=4, reduction=4)
    randomise(model)
    ops = model.backend
    before = {k: ops.to_numpy(v).copy() for k, v in model.state_dict().items()}
    out = model(IDS, MASK, output_hidden_states=True)
    folded, report = fold(model, return_report=True)
    assert not any(isinstance(m, PHMLinear) for m in folded.modules())
    assert sum(isinstance(m, Adapter) for m in folded.modules()) == 4
    assert sum("PHMLinear → Linear" in r for r in report.rules) == 8
    got = folded(IDS, MASK, output_hidden_states=True)
    np.testing.assert_allclose(got.logits.numpy(), out.logits.numpy(), atol=1e-9, rtol=0)
    for a, b in zip(got.hidden_states, out.hidden_states):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9, rtol=0)
    for k, v in model.state_dict().items():  # the input is untouched
        np.testing.assert_array_equal(ops.to_numpy(v), before[k])


def test_saving_stores_the_shared_rule_once_and_loads_it_back_shared(tmp_path):
    model = compacter(toy_teacher(), n=4, reduction=4)
    randomise(model)
    logits = model(IDS, MASK).logits.numpy()
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "numpy") as fh:
        keys = list(fh.keys())
    assert sum(k.endswith("phm_rule") for k in keys) == 1
    loaded = BertForSequenceClassification.from_pretrained(tmp_path, dtype="float64")
    rules = {id(p) for n, p in loaded.named_parameters(remove_duplicate=False) if n.endswith("phm_rule")}
    assert len(rules) == 1
    np.testing.assert_allclose(loaded(IDS, MASK).logits.numpy(), logits, atol=1e-12, rtol=0)
    assert loaded.num_parameters() == model.num_parameters()


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="multiples of n"):
        PHMLinear(10, 8, n=4)
    with pytest.raises(ValueError, match="shared rule must be"):
        PHMLinear(8, 8, n=4, rule=phm_rule(2))
    with pytest.raises(ValueError, match="input width"):
        F.phm_linear(md.tensor(rand((2, 6), 0)), *(md.tensor(a) for a in (rand((4, 4, 4)), rand((4, 2)), rand((4, 2)))))
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="middle")
    with pytest.raises(ValueError, match="unknown keys: size"):
        AdapterConfig.from_dict({"size": 3})
    with pytest.raises(ValueError, match="PHM adapter"):
        compacter(toy_teacher(), n=4, reduction=16)  # bottleneck 1 is not a multiple of 4
    model = compacter(toy_teacher(), n=4, reduction=4)
    with pytest.raises(ValueError, match="already has adapters"):
        add_adapters(model, AdapterConfig())
    with pytest.raises(ValueError, match="no adapters"):
        from minidistill.nn import train_adapters_only
        train_adapters_only(toy_teacher())
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["adapters"]["kind"] = "lora"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="bad 'adapters' entry"):
        BertForSequenceClassification.from_pretrained(tmp_path)


def test_corrupt_shared_weights_metadata_is_refused(tmp_path):
    from minidistill import fileio as io

    io.save_weights(tmp_path / "model.safetensors", {"a": np.zeros(2, np.float32)},
                    {io.SHARED_KEY: json.dumps({"b": "missing"})})
    with pytest.raises(CheckpointError, match="points at 'missing'"):
        io.load_weights(tmp_path)
    io.save_weights(tmp_path / "model.safetensors", {"a": np.zeros(2, np.float32)}, {io.SHARED_KEY: "[1, 2"})
    with pytest.raises(CheckpointError, match="not a JSON mapping"):
        io.load_weights(tmp_path)


@pytest.mark.slow
def test_bert_base_sized_compacter_counts_and_info(tmp_path, capsys):
    """On BERT-base's shape (L = 12, d = 768, k = 24): the paper's counts, and `minidistill
    info` reports the trained fraction."""
    from minidistill.cli import main
    from minidistill.compress.fold import clone

    md.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2))  # BERT-base defaults
    for plus in (False, True):
        m = compacter(clone(model), plus=plus)
        weights = sum(p.size for n, p in adapter_parameters(m) if not n.endswith("bias"))
        assert weights == compacter_parameter_count(12, 768, 32, 4, plus) == (4 if not plus else 2) * 12 * 792 + 64
    m = compacter(model, plus=True)
    m.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    trained = m.num_parameters(trainable_only=True)
    assert f"adapter-only training trains {trained:,} ({trained / m.num_parameters():.3%})" in out
    assert f"{m.num_parameters():,} unique" in out


def test_transformers_reading_says_what_transformers_does(tmp_path):
    """``transformers_reading`` against transformers itself: a plain BERT loads there with our
    logits; with (non-identity) Compacter adapters it loads with other logits."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from minidistill.models.stats import transformers_reading

    plain = toy_teacher(dtype="float32")
    adapted = compacter(toy_teacher(dtype="float32"), n=2, reduction=4)
    randomise(adapted, scale=0.1)
    for name, model, expected in (("plain", plain, True), ("compacter", adapted, False)):
        model.save_pretrained(tmp_path / name)
        with md.no_grad():
            ours = model(IDS, MASK).logits.numpy()
        theirs_model = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / name)).eval()
        with torch.no_grad():
            theirs = theirs_model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
        same = bool(np.allclose(ours, theirs, atol=1e-4))
        assert transformers_reading(model)[0] is same is expected, name
