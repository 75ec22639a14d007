"""Training: optimisers (the trainer, schedules and callbacks arrive with the training issue)."""

from .optim import SGD, AdamW, Optimizer, param_groups

__all__ = ["AdamW", "Optimizer", "SGD", "param_groups"]
