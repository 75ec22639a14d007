"""Data: tokenisation, text datasets (local files, GLUE, rotten_tomatoes) and batching."""

from .datasets import (
    GLUE_TASKS,
    ROTTEN_TOMATOES,
    DataError,
    TaskSpec,
    TextDataset,
    load_dataset,
    load_file,
    load_glue,
    load_rotten_tomatoes,
    rotten_tomatoes_split,
)
from .tokenizer import Tokenizer

__all__ = [
    "DataError",
    "GLUE_TASKS",
    "ROTTEN_TOMATOES",
    "TaskSpec",
    "TextDataset",
    "Tokenizer",
    "load_dataset",
    "load_file",
    "load_glue",
    "load_rotten_tomatoes",
    "rotten_tomatoes_split",
]
