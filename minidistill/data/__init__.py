"""Data: tokenisation, text datasets (local files, GLUE, rotten_tomatoes), token-labelled
sentences (CoNLL / JSON lines), extractive QA (SQuAD), batching and the teacher-output cache."""

from .datasets import (
    GLUE_TASKS,
    ROTTEN_TOMATOES,
    DataError,
    TaskSpec,
    TextDataset,
    WindowedDataset,
    batch_order,
    load_dataset,
    load_file,
    load_glue,
    load_rotten_tomatoes,
    model_inputs,
    rotten_tomatoes_split,
    split_rows,
    take_rows,
)
from .tagging import (
    TokenDataset,
    entities,
    load_tagged_file,
    read_conll,
    read_token_jsonl,
    split_tag,
    tag_names,
    validate_tags,
)
from .masking import MaskingCollator
from .corpus import CORPORA, CorpusCache, PackedCorpus, iter_documents, resolve_corpus
from .qa import QADataset, QAExample, best_answers, load_squad_file, read_squad
from .augment import augment
from .cache import TeacherCache, data_fingerprint, model_fingerprint
from .tokenizer import Tokenizer

__all__ = [
    "CorpusCache",
    "PackedCorpus",
    "iter_documents",
    "resolve_corpus",
    "CORPORA",
    "MaskingCollator",
    "QADataset",
    "QAExample",
    "TokenDataset",
    "WindowedDataset",
    "batch_order",
    "best_answers",
    "entities",
    "load_squad_file",
    "load_tagged_file",
    "read_conll",
    "read_squad",
    "read_token_jsonl",
    "split_tag",
    "tag_names",
    "validate_tags",
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
