"""Compacter: adapters made of Kronecker products (PHM layers) with shared slow weights.

Karimi Mahabadi, Henderson, Ruder: "Compacter: Efficient Low-Rank Hypercomplex Adapter
Layers" (NeurIPS 2021); PHM layers from Zhang et al., "Beyond Fully-Connected Layers with
Quaternions" (ICLR 2021).

A bottleneck adapter with k = d / reduction, inserted after a sub-layer's output projection
(before the residual sum and LayerNorm)::

    adapter(x) = x + U(GELU(D(x)))                         D: d → k,  U: k → d

where D and U are PHM layers::

    W = Σ_{i=1..n} A_i ⊗ B_i,    A_i ∈ R^{n×n} shared by every adapter of the model ("slow"),
                                 B_i = s_i t_iᵀ ∈ R^{(out/n)×(in/n)} rank one, per layer ("fast").

A PHM map in → out holds in + out factor weights, so the adapter weights of the model are

    Compacter    (adapters after attention and after the FFN):  4 L (k + d) + n³
    Compacter++  (after the FFN only):                          2 L (k + d) + n³

plus the adapters' biases. The original code's ``phm_rank`` option (``rank`` here) makes each
fast weight a sum of r rank-one terms, ``B_i = Σ_j s_ij t_ijᵀ``, and multiplies the first term
by r. Only the adapters, the LayerNorms and the task head are trained;
the pretrained weights are frozen and get no gradient. Defaults as the original: n = 4,
reduction 32, GELU, lr 3e-3.

``(A ⊗ s tᵀ) x`` is computed without W (``Ops.phm_forward``: the vec identity
``(A ⊗ B) vec(X) = vec(B X Aᵀ)`` with rank-one B), a Numba kernel on that backend.
``fold`` turns each PHM layer into a plain dense Linear with the same outputs; the adapter
itself stays (its GELU does not fold into the frozen weights).
"""

from __future__ import annotations

from ..nn.adapters import AdapterConfig, PHMLinear, add_adapters, pooler_of, train_adapters_only
from ..nn.layers import Linear
from ..nn.module import Module
from .fold import register_fold
from .registry import AdapterSpec, DemoStep, Method, register

#: the original's defaults
DEFAULT_N = 4
DEFAULT_REDUCTION = 32
DEFAULT_LR = 3e-3


def compacter(model: Module, plus: bool = False, n: int = DEFAULT_N, reduction: int = DEFAULT_REDUCTION,
              layer_norms: bool = True, head: bool = True, pooler: bool = False, rank: int = 1) -> Module:
    """Insert Compacter (``plus=False``) or Compacter++ (``plus=True``) adapters into a BERT
    in place, freeze everything else, and return the model.

    Args:
        model: a BERT (``BertModel`` or a task model) built or loaded by minidistill.
        plus: Compacter++ (one adapter per layer, after the FFN) instead of Compacter (two).
        n: Kronecker terms; hidden size and bottleneck must be multiples of it.
        reduction: bottleneck k = hidden / reduction.
        layer_norms: also train the LayerNorms (as the original).
        head: also train the task head (as the original).
        pooler: also train BERT's pooler (see :func:`~minidistill.nn.adapters.train_adapters_only`).
        rank: rank of each fast weight (the original code's ``phm_rank``; 1 in the paper).
    """
    if pooler:
        pooler_of(model)  # refuse before the model is changed
    cfg = AdapterConfig(reduction=reduction, placement="pfeiffer" if plus else "houlsby", kind="phm", phm_n=n,
                        phm_rank=rank)
    add_adapters(model, cfg)
    return train_adapters_only(model, layer_norms=layer_norms, head=head, pooler=pooler)


def compacter_parameter_count(num_layers: int, hidden_size: int, reduction: int = DEFAULT_REDUCTION,
                              n: int = DEFAULT_N, plus: bool = False, rank: int = 1) -> int:
    """The paper's count of adapter weights (biases excluded): ``4L(k + d) + n³`` for
    Compacter, ``2L(k + d) + n³`` for Compacter++; fast weights of rank r multiply the
    first term by r."""
    k = hidden_size // reduction
    return rank * (2 if plus else 4) * num_layers * (k + hidden_size) + n ** 3


@register_fold(PHMLinear)
def _fold_phm(layer: PHMLinear, report) -> Linear:
    """A PHM layer → a dense Linear with ``W = Σ_i A_i ⊗ s_i t_iᵀ`` and the same bias."""
    out = Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    ops = layer.in_factor.backend
    w = layer.weight().data  # (out, in)
    out.weight.data, out.weight.backend = ops.copy(w), ops
    if layer.bias is not None:
        out.bias.data, out.bias.backend = ops.copy(layer.bias.data), ops
    out.train(layer.training)
    for p in out.parameters():
        p.requires_grad = layer.in_factor.requires_grad
    return out


# ------------------------------------------------------------------- registry
def _builder(plus: bool):
    def build(model, spec: AdapterSpec):
        compacter(model, plus=plus, n=spec.phm_n, reduction=spec.reduction or DEFAULT_REDUCTION,
                  pooler=spec.train_pooler, rank=spec.phm_rank)
    return build


def _demo(ctx):
    return [DemoStep("compacter", "Compacter-tuned MiniLM-L6", "finetune",
                     {"adapters": "compacter", "train": {"lr": 3e-3}})]


register(Method("compacter", "Compacter: PHM adapters after attention and FFN, only they (and LayerNorms, head) train",
                role="adapters", build=_builder(False), demo=_demo, order=60))
register(Method("compacter++", "Compacter++: PHM adapters after the FFN only",
                role="adapters", build=_builder(True), order=61))
