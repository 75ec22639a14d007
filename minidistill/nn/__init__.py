"""Neural-network building blocks: Module, Parameter and layers, on every backend."""

from . import functional, init
from .adapters import (Adapter, AdapterConfig, PHMLinear, add_adapters, adapter_parameters, phm_rule,
                       train_adapters_only, trained_fraction)
from .init import manual_seed
from .layers import LSTM, Dropout, Embedding, LayerNorm, Linear, LinearMap, MultiHeadSelfAttention, attention_scores
from .module import Module, ModuleList, Parameter, StateDictError

__all__ = [
    "Adapter",
    "AdapterConfig",
    "PHMLinear",
    "add_adapters",
    "adapter_parameters",
    "phm_rule",
    "train_adapters_only",
    "trained_fraction",
    "Dropout",
    "Embedding",
    "LSTM",
    "LayerNorm",
    "Linear",
    "LinearMap",
    "Module",
    "ModuleList",
    "MultiHeadSelfAttention",
    "Parameter",
    "StateDictError",
    "attention_scores",
    "functional",
    "init",
    "manual_seed",
]
