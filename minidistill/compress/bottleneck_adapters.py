"""Dense bottleneck adapters as parameter-efficient fine-tuning methods.

Implements "Parameter-Efficient Transfer Learning for NLP" (Houlsby et al., 2019) and the
placement of "AdapterFusion" (Pfeiffer et al., 2021). An adapter is a residual bottleneck

    h ← h + W_up σ(W_down h)        W_down (k, d), W_up (d, k), k = d / reduction

inserted after the attention block and after the FFN (Houlsby) or after the FFN only
(Pfeiffer); only the adapters, the LayerNorms and the task head train. The layers themselves
live in :mod:`minidistill.nn.adapters` (Compacter's PHM adapters share them); this module
registers the two placements for ``minidistill finetune --adapters=houlsby|pfeiffer``.
"""

from __future__ import annotations

from ..nn.adapters import AdapterConfig, add_adapters, train_adapters_only
from .registry import AdapterSpec, Method, register

DEFAULT_REDUCTION = 16


def _builder(placement: str):
    def build(model, spec: AdapterSpec):
        add_adapters(model, AdapterConfig(reduction=spec.reduction or DEFAULT_REDUCTION, placement=placement))
        train_adapters_only(model, pooler=spec.train_pooler)
    return build


register(Method("houlsby", "dense bottleneck adapters after attention and FFN (Houlsby et al. 2019)",
                role="adapters", build=_builder("houlsby"), order=62))
register(Method("pfeiffer", "dense bottleneck adapters after the FFN only (Pfeiffer et al. 2021)",
                role="adapters", build=_builder("pfeiffer"), order=63))
