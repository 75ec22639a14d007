"""Bottleneck adapters and PHM (parameterised hypercomplex) layers.

Adapter (Houlsby et al., 2019), a residual bottleneck with k = d / reduction::

    adapter(x) = x + U(GELU(D(x)))          D: d → k,  U: k → d

PHM layer (Zhang et al., 2021; Compacter, Karimi Mahabadi et al., 2021), a Linear whose
(out, in) weight is a sum of n Kronecker products::

    W = Σ_{i=1..n} A_i ⊗ B_i,   A_i (n × n) "slow" (one set shared by a whole model),
                                B_i = s_i t_iᵀ (out/n × in/n) rank-one "fast" weights per layer

so a PHM map d → k holds d + k factor weights (plus n³ for the shared rule) instead of
d · k, and ``(A ⊗ s tᵀ) x`` never needs W: see ``Ops.phm_forward``. The original code's
``phm_rank`` option makes each fast weight a sum of r rank-one terms,
``B_i = Σ_{j=1..r} s_ij t_ijᵀ``: r (d + k) factor weights per map.

Placement in a BERT layer (``add_adapters``): *Houlsby* puts one adapter after the
attention block's output projection and one after the FFN's, each before its residual
sum and LayerNorm; *Pfeiffer* keeps only the FFN one. With a zero up-projection the
adapter is the identity, so inserting adapters this way leaves the model's outputs
unchanged. Adapter-only training (``train_adapters_only``) freezes everything else and
computes no gradient for it (LayerNorms and the task head optionally trainable).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import functional as F
from ..core.tensor import Tensor
from . import init
from .layers import LayerNorm, Linear
from .module import Module, Parameter


def phm_rule(n: int, std: float = 0.01) -> Parameter:
    """A fresh (n, n, n) set of slow weights A_i, N(0, std²) (Compacter's run default;
    its PHMLinear class defaults to 1e-4)."""
    return Parameter(init.normal((n, n, n), std))


class PHMLinear(Module):
    """``y = x Wᵀ + b`` with ``W = Σ_i A_i ⊗ (s_i t_iᵀ)`` (out, in), never materialised.

    Args:
        in_features: input width, a multiple of ``n``.
        out_features: output width, a multiple of ``n``.
        n: number of Kronecker terms (and the size of each A_i).
        rule: the shared (n, n, n) slow weights (a :func:`phm_rule`); a fresh one if None.
            Passing one object to several layers shares it: it is one parameter, counted
            and saved once, and its gradient sums over every layer that uses it.
        bias: add a bias.
        materialize: build W explicitly and use a dense product (for comparison; same
            outputs and gradients).
        rank: rank r of each fast weight, ``B_i = Σ_j s_ij t_ijᵀ`` (the original's
            ``phm_rank``; 1, the paper's, by default).

    Parameters: ``phm_rule`` (n, n, n), ``out_factor`` (n r, out/n) (row i r + j = s_ij),
    ``in_factor`` (n r, in/n) (row i r + j = t_ij), ``bias`` (out,); the factors are
    Glorot-uniform per fast weight (fan in/n + r), as the original.
    """

    def __init__(self, in_features: int, out_features: int, n: int = 4, rule: Parameter | None = None,
                 bias: bool = True, materialize: bool = False, rank: int = 1):
        if n < 1 or in_features % n or out_features % n:
            raise ValueError(f"PHMLinear: in_features ({in_features}) and out_features ({out_features}) "
                             f"must be multiples of n ({n})")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"PHMLinear: rank must be a positive integer, got {rank!r}")
        if rule is not None and tuple(rule.shape) != (n, n, n):
            raise ValueError(f"PHMLinear: a shared rule must be ({n}, {n}, {n}), got {tuple(rule.shape)}")
        self.in_features, self.out_features, self.n, self.materialize = in_features, out_features, n, materialize
        self.rank = rank
        p, q = in_features // n, out_features // n
        self.phm_rule = rule if rule is not None else phm_rule(n)
        self.out_factor = Parameter(init.zeros((n * rank, q)))
        self.in_factor = Parameter(init.zeros((n * rank, p)))
        self.reset_factors()
        self.bias = Parameter(init.zeros((out_features,))) if bias else None

    def reset_factors(self) -> None:
        """Glorot-uniform fast-weight factors, per fast weight (fan in/n + r), as the original;
        the shared rule and the bias are left alone."""
        for f in (self.out_factor, self.in_factor):
            f.data = f.backend.asarray(init.uniform(f.shape, math.sqrt(6.0 / (f.shape[1] + self.rank))),
                                       dtype=f.dtype.name)

    def term_rules(self) -> Tensor:
        """The rule of every rank-one term, (n r, n, n): each A_i repeated r times (the rule
        itself when r = 1); differentiable, so the rule's gradient sums over the repeats."""
        if self.rank == 1:
            return self.phm_rule
        return self.phm_rule[np.repeat(np.arange(self.n), self.rank)]  # (n r, n, n)

    def weight(self) -> Tensor:
        """The (out, in) weight ``Σ_i A_i ⊗ B_i``, built explicitly (differentiable)."""
        return F.kron_weight(self.term_rules(), self.out_factor, self.in_factor)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., in) → (..., out)."""
        if self.materialize:
            return F.linear(x, self.weight(), self.bias)
        return F.phm_linear(x, self.term_rules(), self.out_factor, self.in_factor, self.bias)

    def extra_repr(self):
        rank = f", rank={self.rank}" if self.rank > 1 else ""
        return f"in={self.in_features}, out={self.out_features}, n={self.n}{rank}, bias={self.bias is not None}"


@dataclass
class AdapterConfig:
    """How to insert adapters into a model.

    Attributes:
        reduction: bottleneck k = hidden / reduction.
        placement: "houlsby" (after attention and after the FFN) or "pfeiffer" (FFN only).
        kind: "dense" (two Linear maps) or "phm" (two PHM layers sharing one rule per model:
            Compacter).
        phm_n: number of Kronecker terms for "phm".
        phm_rank: rank of each PHM fast weight (the original's ``phm_rank``; 1 = Compacter).
        layer_norm: add a LayerNorm after the residual sum, ``LN(x + U(GELU(D x)))`` (as
            MiniALBERT's adapters); off by default so that a fresh adapter is the identity.
    """

    reduction: int = 16
    placement: str = "houlsby"
    kind: str = "dense"
    phm_n: int = 4
    layer_norm: bool = False
    phm_rank: int = 1

    PLACEMENTS = ("houlsby", "pfeiffer")
    KINDS = ("dense", "phm")

    def __post_init__(self):
        if self.placement not in self.PLACEMENTS:
            raise ValueError(f"AdapterConfig.placement must be one of {self.PLACEMENTS}, got {self.placement!r}")
        if self.kind not in self.KINDS:
            raise ValueError(f"AdapterConfig.kind must be one of {self.KINDS}, got {self.kind!r}")
        if not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"AdapterConfig.reduction must be a positive integer, got {self.reduction!r}")
        if not isinstance(self.phm_rank, int) or isinstance(self.phm_rank, bool) or self.phm_rank < 1:
            raise ValueError(f"AdapterConfig.phm_rank must be a positive integer, got {self.phm_rank!r}")

    @property
    def sites(self) -> tuple[str, ...]:
        """The adapter sites of a layer this placement uses."""
        return ("attention", "ffn") if self.placement == "houlsby" else ("ffn",)

    def to_dict(self) -> dict:
        """JSON-ready fields (stored in the model's ``config.json`` under ``adapters``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        """Build from ``to_dict``'s output; unknown keys are an error that names them."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"adapter config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)


class Adapter(Module):
    """A bottleneck adapter ``x + up(GELU(down(x)))`` (optionally followed by a LayerNorm).

    Dense adapters start with ``down`` N(0, 0.02²) and ``up`` zero, so a fresh adapter is
    the identity; PHM adapters use Glorot-uniform factors (as Compacter) and start close to it.
    """

    def __init__(self, hidden_size: int, config: AdapterConfig | None = None, rule: Parameter | None = None,
                 layer_norm_eps: float = 1e-12):
        config = config or AdapterConfig()
        k = hidden_size // config.reduction
        if k < 1:
            raise ValueError(f"adapter reduction {config.reduction} leaves no bottleneck for width {hidden_size}")
        self.hidden_size, self.bottleneck, self.kind = hidden_size, k, config.kind
        if config.kind == "phm":
            if k % config.phm_n or hidden_size % config.phm_n:
                raise ValueError(f"PHM adapter: hidden {hidden_size} and bottleneck {k} must be multiples of "
                                 f"phm_n={config.phm_n}")
            self.down = PHMLinear(hidden_size, k, config.phm_n, rule, rank=config.phm_rank)
            self.up = PHMLinear(k, hidden_size, config.phm_n, self.down.phm_rule, rank=config.phm_rank)
        else:
            self.down = Linear(hidden_size, k)
            self.up = Linear(k, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, layer_norm_eps) if config.layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The adapter's own start: dense ``down`` N(0, 0.02²) and ``up`` zero (the identity);
        PHM factors Glorot-uniform (the shared rule is left alone)."""
        def put(p, a):
            p.data = p.backend.asarray(a, dtype=p.dtype.name)

        for lin in (self.down, self.up):
            if isinstance(lin, PHMLinear):
                lin.reset_factors()
            else:
                put(lin.weight, init.normal(lin.weight.shape, 0.02) if lin is self.down else init.zeros(lin.weight.shape))
            if lin.bias is not None:
                put(lin.bias, init.zeros(lin.bias.shape))
        if self.LayerNorm is not None:
            put(self.LayerNorm.weight, init.ones(self.LayerNorm.weight.shape))
            put(self.LayerNorm.bias, init.zeros(self.LayerNorm.bias.shape))

    def forward(self, x: Tensor) -> Tensor:
        """(..., d) → (..., d)."""
        h = self.up(F.gelu(self.down(x)))  # (..., d)
        y = x + h  # (..., d)
        return self.LayerNorm(y) if self.LayerNorm is not None else y

    def extra_repr(self):
        return f"{self.hidden_size} → {self.bottleneck} → {self.hidden_size}, {self.kind}"


def adapter_sites(model: Module) -> list[tuple[str, Module]]:
    """``(name, module)`` for every module that can hold an adapter (it declares an
    ``adapter_site`` of "attention" or "ffn", as BERT's two output blocks do)."""
    return [(name, m) for name, m in model.named_modules() if getattr(type(m), "adapter_site", None)]


def add_adapters(model: Module, config: AdapterConfig | None = None) -> Module:
    """Insert adapters into every layer of ``model`` in place and return it.

    Each site gets an ``adapter`` attribute (weights named ``….output.adapter.down.weight``);
    with ``kind="phm"`` every adapter of the model shares one rule. The config is kept in
    ``model.config.extra["adapters"]`` so ``save_pretrained`` / ``from_pretrained`` rebuild
    the adapters. Raises when the model has no adapter sites or already has adapters.
    """
    config = config or AdapterConfig()
    sites = [(n, m) for n, m in adapter_sites(model) if type(m).adapter_site in config.sites]
    if not sites:
        raise ValueError(f"{type(model).__name__} has no adapter sites (BERT output blocks) to insert adapters into")
    if any(getattr(m, "adapter", None) is not None for _, m in sites):
        raise ValueError(f"{type(model).__name__} already has adapters")
    ops = model.backend
    dtype = next(iter(model.parameters())).dtype.name
    rule = phm_rule(config.phm_n) if config.kind == "phm" else None
    eps = getattr(getattr(model, "config", None), "layer_norm_eps", 1e-12)
    for _, m in sites:
        m.adapter = Adapter(m.LayerNorm.normalized_shape, config, rule, eps)
        m.adapter.to(backend=ops, dtype=dtype)
    if hasattr(model, "config"):
        model.config.extra["adapters"] = config.to_dict()
    return model


def adapter_parameters(model: Module) -> list[tuple[str, Parameter]]:
    """Every parameter of an :class:`Adapter` of ``model`` (shared PHM rules once)."""
    ids = {id(p) for m in model.modules() if isinstance(m, Adapter) for p in m.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


def pooler_of(model: Module) -> Module:
    """BERT's pooler in ``model`` (a ``BertModel`` or a task model around one); a clear
    ``ValueError`` when it has none (token classification builds BERT without one)."""
    pooler = getattr(getattr(model, "bert", model), "pooler", None)
    if pooler is None:
        raise ValueError(f"{type(model).__name__} has no pooler to train (pooler=True)")
    return pooler


def train_adapters_only(model: Module, layer_norms: bool = True, head: bool = True, pooler: bool = False) -> Module:
    """Freeze everything but the adapters (in place; frozen parameters get no gradient and
    are never updated).

    Args:
        layer_norms: also train every LayerNorm (Compacter does).
        head: also train the task head (``model.head_parameter_names()``: the classifier).
        pooler: also train BERT's pooler (dense + tanh on ``[CLS]``), making the trained head
            two layers deep, the shape of the adapter libraries' default classification head.
            It helps early training when the backbone's pooler was never trained for a
            sentence-level task (a sentence-embedding checkpoint trained with mean pooling).
    """
    adapters = {id(p) for _, p in adapter_parameters(model)}
    if not adapters:
        raise ValueError(f"{type(model).__name__} has no adapters to train (add_adapters first)")
    pooler_ids = {id(p) for p in pooler_of(model).parameters()} if pooler else set()
    model.requires_grad_(False)
    head_names = set(model.head_parameter_names()) if head and hasattr(model, "head_parameter_names") else set()
    norm_ids = {id(p) for m in model.modules() if isinstance(m, LayerNorm) for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in adapters or id(p) in pooler_ids or name in head_names or (layer_norms and id(p) in norm_ids):
            p.requires_grad = True
    return model


def trained_fraction(model: Module) -> float:
    """Trainable unique parameters / all unique parameters."""
    total = model.num_parameters()
    return model.num_parameters(trainable_only=True) / total if total else 0.0
