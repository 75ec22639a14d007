"""Compression methods, one module each (kd: distillation objectives and layer maps;
student: student creation; distill: the training loop that combines them, in stages;
xtremedistil: BiLSTM students and the staged recipe; fold: structural re-parameterisation
into plain models; wid: Weight-Inherited Distillation; theseus: progressive module replacing;
compacter: Kronecker (PHM) adapters; minialbert: recursive students)."""

from .kd import (
    AttentionKL,
    AttentionProbMSE,
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
from .compacter import compacter, compacter_parameter_count
from .distill import Stage, distill
from .minialbert import make_minialbert, minialbert_objectives
from .fold import FoldReport, fold, register_fold
from .theseus import ConstantReplacement, LinearReplacement, TheseusModel
from .wid import WIDConfig, WIDModel
from .student import choose_layers, make_student, pca_projection
from .xtremedistil import make_bilstm_student, xtremedistil_stages

__all__ = [
    "AttentionKL",
    "AttentionProbMSE",
    "AttentionScoreMSE",
    "ConstantReplacement",
    "compacter",
    "compacter_parameter_count",
    "FoldReport",
    "LinearReplacement",
    "TheseusModel",
    "WIDConfig",
    "WIDModel",
    "fold",
    "register_fold",
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
    "make_minialbert",
    "make_student",
    "minialbert_objectives",
    "needed_outputs",
    "pca_projection",
    "total_loss",
    "xtremedistil_stages",
]
