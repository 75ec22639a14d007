"""Neural-network building blocks: Module, Parameter and layers, on every backend."""

from . import functional, init
from .init import manual_seed
from .layers import LSTM, Dropout, Embedding, LayerNorm, Linear, MultiHeadSelfAttention, attention_scores
from .module import Module, ModuleList, Parameter, StateDictError

__all__ = [
    "Dropout",
    "Embedding",
    "LSTM",
    "LayerNorm",
    "Linear",
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
