"""Data: tokenisation, text datasets (local files, GLUE, rotten_tomatoes), batching and the
teacher-output cache."""

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
    model_inputs,
    rotten_tomatoes_split,
    split_rows,
    take_rows,
)
from .augment import augment
from .cache import TeacherCache, data_fingerprint, model_fingerprint
from .tokenizer import Tokenizer

__all__ = [
    "DataError",
    "GLUE_TASKS",
    "ROTTEN_TOMATOES",
    "TaskSpec",
    "TeacherCache",
    "TextDataset",
    "Tokenizer",
    "augment",
    "data_fingerprint",
    "load_dataset",
    "load_file",
    "load_glue",
    "load_rotten_tomatoes",
    "model_fingerprint",
    "model_inputs",
    "rotten_tomatoes_split",
    "split_rows",
    "take_rows",
]
