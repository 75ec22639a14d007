"""``fold``: structural re-parameterisation of a model that carries compression machinery into
a plain, smaller, standard model that needs none of it.

A model being compressed carries extra structure that only matters during training: WID's
compactors around every linear map, Theseus' predecessor modules and gates. Once training is
done that structure can be multiplied out, because it is linear (compactors) or no longer
used (predecessors): for WID,

    y = R (W (C x) + b)   with kept rows S_out of R and kept columns S_in of C
    ⇒  W_s = R[S_out, :] · W · C[:, S_in],   b_s = R[S_out, :] · b,

so the folded layer computes exactly the kept outputs of the compacted one. ``fold`` applies
these identities and returns the plain model.

Each foldable module type registers its own rule with :func:`register_fold`; ``fold`` walks the
model from the top and replaces every module that has a rule by the rule's output (a new
module, whose children the walk then visits too). New methods add one rule, not a branch here.

``fold`` never mutates its input: every rule builds new modules with copied weights.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..backends import use_backend
from ..nn.module import Module

log = logging.getLogger(__name__)

_RULES: dict[type, callable] = {}


def register_fold(cls: type):
    """Decorator: ``@register_fold(MyModule)`` on ``rule(module, report) -> Module``.

    The rule returns the plain replacement of ``module`` (a new module that shares no memory
    with it) and may record what it did in ``report`` (:class:`FoldReport`)."""
    def deco(rule):
        _RULES[cls] = rule
        return rule
    return deco


def fold_rules() -> dict:
    """The registered rules: module type → rule."""
    return dict(_RULES)


@dataclass
class FoldReport:
    """What :func:`fold` did.

    Attributes:
        params_before, params_after: unique parameter elements of the input and the result.
        max_residual: the largest absolute weight that folding dropped (a masked compactor
            entry that had not yet decayed to exactly zero); 0.0 when the fold is exact.
        rules: one line per folded module: its path and what it became.
        options: the options ``fold`` was called with (rules read them, e.g. ``unroll``).
    """

    params_before: int = 0
    params_after: int = 0
    max_residual: float = 0.0
    rules: list = field(default_factory=list)
    options: dict = field(default_factory=dict)

    def residual(self, value: float) -> None:
        """Record a dropped weight magnitude."""
        self.max_residual = max(self.max_residual, float(value))

    def __str__(self):
        lines = [f"fold: {self.params_before:,} → {self.params_after:,} parameters "
                 f"({self.params_after / max(self.params_before, 1):.1%}); largest dropped weight {self.max_residual:.3g}"]
        lines += [f"  {r}" for r in self.rules]
        return "\n".join(lines)


def fold(model: Module, return_report: bool = False, unroll: bool = False):
    """Fold every foldable module of ``model`` into plain modules; returns a new model.

    Args:
        model: any module; modules with a registered rule (WID compactors, Theseus, PHM
            layers, …) are replaced, everything else is copied unchanged.
        return_report: also return the :class:`FoldReport`.
        unroll: also write shared layers out (a MiniALBERT becomes a plain BERT with one
            copy of its shared layer per repeat: more parameters, the same function).

    A model with nothing to fold comes back as a copy, with a warning saying so.
    """
    report = FoldReport(params_before=model.num_parameters(), options={"unroll": unroll})
    work = clone(model)  # rules act on the copy: the input is never touched
    out = _fold(work, "", report)
    if not report.rules:
        warnings.warn(f"fold: {type(model).__name__} has nothing to fold; returning a copy", stacklevel=2)
    report.params_after = out.num_parameters()
    log.info("%s", report)
    return (out, report) if return_report else out


def _fold(module: Module, path: str, report: FoldReport) -> Module:
    """``module`` with every sub-module that has a rule replaced (in place), or its replacement."""
    rule = next((_RULES[c] for c in type(module).__mro__ if c in _RULES), None)  # a base's rule serves its subclasses
    if rule is not None:
        new = rule(module, report)
        if new is not module:  # a rule may decline (return the module) and let the walk go on
            report.rules.append(f"{path or '(model)'}: {type(module).__name__} → {type(new).__name__}")
            module = new  # its parts may fold further (the PHM adapters of an unrolled model)
    for name, child in list(module.named_children()):
        new = _fold(child, f"{path}.{name}" if path else name, report)
        if new is not child:
            setattr(module, name, new)
    return module


def clone(module: Module) -> Module:
    """A copy of ``module`` with its own parameter arrays (same backend, dtype and mode).

    Shared parameters stay shared in the copy."""
    import copy

    from ..nn.module import Parameter

    memo = {}
    for p in _all_parameters(module):
        if id(p) not in memo:
            q = Parameter.__new__(Parameter)
            q.__dict__.update(p.__dict__)
            q.data, q.grad = p.backend.copy(p.data), None
            memo[id(p)] = q
    for b in {id(p.backend): p.backend for p in _all_parameters(module)}.values():
        memo[id(b)] = b  # backends are singletons: never copied
    return copy.deepcopy(module, memo)


def _all_parameters(module: Module):
    for _, p in module.named_parameters(remove_duplicate=False):
        yield p


def build_like(model: Module, config, state: dict, cls=None) -> Module:
    """A new model of ``cls`` (default ``type(model)``) built from ``config`` on ``model``'s
    backend and dtype, loaded from the NumPy arrays in ``state`` (strict), in ``model``'s mode."""
    cls = cls or type(model)
    with use_backend(model.backend):
        out = cls(config)
    out.to(dtype=next(model.parameters()).dtype.name)
    out.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    out.train(model.training)
    return out
