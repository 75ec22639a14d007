"""Compression methods, one module each (kd: distillation objectives and layer maps;
student: student creation; distill: the training loop that combines them)."""

from .kd import (
    AttentionKL,
    AttentionScoreMSE,
    HardKD,
    HiddenCosine,
    HiddenMSE,
    LayerMap,
    LayerPairObjective,
    LogitMSE,
    MiniLMv2Relations,
    Objective,
    SoftKD,
    ValueRelationKL,
    needed_outputs,
    total_loss,
)
from .distill import distill
from .student import choose_layers, make_student, pca_projection

__all__ = [
    "AttentionKL",
    "AttentionScoreMSE",
    "HardKD",
    "HiddenCosine",
    "HiddenMSE",
    "LayerMap",
    "LayerPairObjective",
    "LogitMSE",
    "MiniLMv2Relations",
    "Objective",
    "SoftKD",
    "ValueRelationKL",
    "choose_layers",
    "distill",
    "make_student",
    "needed_outputs",
    "pca_projection",
    "total_loss",
]
