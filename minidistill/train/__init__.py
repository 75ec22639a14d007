"""Training: optimisers, schedules, metrics, and the Trainer every method reuses."""

from . import metrics
from .optim import SGD, AdamW, Optimizer, param_groups
from .schedules import SCHEDULES, Schedule, clip_grad_norm
from .trainer import (TrainConfig, Trainer, TrainState, default_loss, evaluate, latest_checkpoint, merge_callbacks,
                      predict)

__all__ = [
    "AdamW",
    "Optimizer",
    "SCHEDULES",
    "SGD",
    "Schedule",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "clip_grad_norm",
    "default_loss",
    "evaluate",
    "latest_checkpoint",
    "merge_callbacks",
    "metrics",
    "param_groups",
    "predict",
]
