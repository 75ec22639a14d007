"""Compression methods, one module each (kd: distillation objectives and layer maps;
student: student creation; distill: the training loop that combines them, in stages;
xtremedistil: BiLSTM students and the staged recipe)."""

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
    PooledCosine,
    PooledMSE,
    SoftKD,
    ValueRelationKL,
    needed_outputs,
    total_loss,
)
from .distill import Stage, distill
from .student import choose_layers, make_student, pca_projection
from .xtremedistil import make_bilstm_student, xtremedistil_stages

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
    "PooledCosine",
    "PooledMSE",
    "SoftKD",
    "Stage",
    "ValueRelationKL",
    "choose_layers",
    "distill",
    "make_bilstm_student",
    "make_student",
    "needed_outputs",
    "pca_projection",
    "total_loss",
    "xtremedistil_stages",
]
