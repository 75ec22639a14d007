"""Counting a model: unique and executed parameters, trained fraction, FLOPs per token.

*Unique* parameters are what is stored (a shared layer or a shared PHM rule once);
*executed* parameters count every use in one forward pass (a MiniALBERT's shared layer L
times), which is what the compute follows. A module whose children run more than once says
so with ``run_counts() -> {child name: times}``.

FLOPs are multiply-adds × 2 of one forward pass, per token: every Linear 2 · in · out, a PHM
layer 2 n (in + out) + 2 n³ (as computed, W never built), attention 4 · T · D per layer (the
T × T scores and the weighted sum of values); the pooler and classifier run once per
sequence and are spread over its T tokens. Embedding lookups, LayerNorms and elementwise
work are left out (they are O(D) per token).
"""

from __future__ import annotations

from ..nn.adapters import PHMLinear, adapter_parameters
from ..nn.layers import Linear, MultiHeadSelfAttention
from ..nn.quantized import FakeQuantLinear, Int8Linear
from ..nn.quantized import describe as describe_quantized
from ..nn.module import Module

#: modules that run once per sequence, not once per token
_PER_SEQUENCE = ("pooler", "classifier")


def _walk(module: Module, times: int = 1, path: str = "", seen=None):
    """``(path, module, times it runs per forward)`` for every module (each once)."""
    seen = set() if seen is None else seen
    if id(module) in seen:
        return
    seen.add(id(module))
    yield path, module, times
    counts = module.run_counts() if hasattr(module, "run_counts") else {}
    for name, child in module.named_children():
        yield from _walk(child, times * counts.get(name, 1), f"{path}.{name}" if path else name, seen)


def executed_parameters(model: Module) -> int:
    """Parameter elements used by one forward pass, counting each use of a shared module."""
    total = 0
    for _, m, times in _walk(model):
        total += times * sum(p.size for _, p in m._own_parameters())
    return total


def flops_per_token(model: Module, seq_len: int = 128) -> int:
    """Forward FLOPs per token at sequence length ``seq_len`` (see the module docstring)."""
    total = 0.0
    for path, m, times in _walk(model):
        per_seq = path.split(".")[-1] in _PER_SEQUENCE or any(f"{s}." in f"{path}." for s in _PER_SEQUENCE)
        scale = times / seq_len if per_seq else times
        if isinstance(m, (Linear, Int8Linear, FakeQuantLinear)):  # an int8 multiply-add counts as one too
            total += scale * 2 * m.in_features * m.out_features
        elif isinstance(m, PHMLinear):
            total += scale * m.rank * (2 * m.n * (m.in_features + m.out_features) + 2 * m.n ** 3)
        elif isinstance(m, MultiHeadSelfAttention):
            total += scale * 4 * seq_len * m.all_head_size
    return int(round(total))


def model_stats(model: Module, seq_len: int = 128) -> dict:
    """Unique / executed / trainable parameters, adapter parameters and FLOPs per token."""
    unique = model.num_parameters()
    adapters = sum(p.size for _, p in adapter_parameters(model))
    return {
        "unique_parameters": unique,
        "executed_parameters": executed_parameters(model),
        "trainable_parameters": model.num_parameters(trainable_only=True),
        "adapter_parameters": adapters,
        "flops_per_token": flops_per_token(model, seq_len),
        "seq_len": seq_len,
    }


def transformers_reading(model) -> tuple[bool, str]:
    """Whether HF transformers reads this saved model as it is, with the same outputs, and why.

    Plain BERT classifiers (a teacher, a KD or layer-drop student, a folded WID or Theseus
    student) do. A BERT with adapters loads there without them (transformers reports the
    adapter weights as unexpected and computes other outputs), and adapters cannot be folded
    into a plain BERT (each is a non-linear bottleneck); a mean-pooled head loads but reads
    ``[CLS]``; MiniALBERT and the BiLSTM are not transformers architectures.
    """
    from .bilstm import BiLSTMStudent
    from .minialbert import MiniAlbertForSequenceClassification

    if isinstance(model, BiLSTMStudent):
        return False, "a BiLSTM student is not a transformers architecture: load it with minidistill"
    if isinstance(model, MiniAlbertForSequenceClassification):
        return False, ("a MiniALBERT is not a transformers architecture: load it with minidistill "
                       "(fold(model, unroll=True) writes its repeats out as layers)")
    if describe_quantized(model) is not None:
        return False, ("its weights are int8 with scales beside them, which transformers' BERT does not read: load it "
                       "with minidistill, or run its ONNX export (minidistill export) under ONNX Runtime")
    if adapter_parameters(model):
        return False, ("its adapters are not part of BERT: transformers would load it without them (other outputs), "
                       "and adapters cannot be folded into plain BERT; load it with minidistill")
    if getattr(model.config, "classifier_pooling", "cls") == "mean":
        return False, "its pooler reads the mean over tokens; transformers' BERT reads [CLS] (other outputs)"
    return True, "a plain BERT: transformers reads it as it is, with the same outputs"
