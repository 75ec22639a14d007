"""Load any saved model minidistill writes by what its ``config.json`` says it is.

``model_type`` picks the family (BERT, MiniALBERT, the BiLSTM student) and ``architectures``
the head (sentence classifier, token tagger, QA span head, or the bare encoder), the way
transformers' auto classes read the same fields.
"""

from __future__ import annotations

from pathlib import Path

from .. import fileio as io
from .bert import BERT_TASK_MODELS, BertModel
from .bilstm import MODEL_TYPE as BILSTM_TYPE
from .bilstm import BiLSTMStudent
from .minialbert import MINIALBERT_TASK_MODELS, MiniAlbertConfig

#: every class a saved ``architectures`` entry may name
MODEL_CLASSES = {cls.__name__: cls for cls in (*BERT_TASK_MODELS.values(), *MINIALBERT_TASK_MODELS.values(),
                                               BertModel, BiLSTMStudent)}


def model_class(config: dict):
    """The class a saved config describes (default: a BERT sentence classifier, what a
    checkpoint without ``architectures`` is read as)."""
    kind = config.get("model_type")
    if kind == BILSTM_TYPE:
        return BiLSTMStudent
    names = config.get("architectures") or []
    cls = MODEL_CLASSES.get(names[0]) if names else None
    if kind == MiniAlbertConfig.MODEL_TYPE:
        return cls if cls in MINIALBERT_TASK_MODELS.values() else MINIALBERT_TASK_MODELS["sequence"]
    if cls in BERT_TASK_MODELS.values() or cls is BertModel:  # our names are transformers' names
        return cls
    return BERT_TASK_MODELS["sequence"]


def load_model(path, backend=None, device=None, dtype=None):
    """The model saved in ``path`` (any head, any family), on ``backend``."""
    path = Path(path)
    cls = model_class(io.read_config(path))
    return cls.from_pretrained(path, backend=backend, device=device, dtype=dtype)


def task_model_class(path, kind: str):
    """The class of the ``kind`` head (sequence, token, qa, mlm) in the family of the model
    saved in ``path``: a MiniALBERT checkpoint gives a MiniALBERT model of that head, any other
    a BERT one (what fine-tuning a general student of any kind on a task loads)."""
    family = io.read_config(Path(path)).get("model_type")
    table = MINIALBERT_TASK_MODELS if family == MiniAlbertConfig.MODEL_TYPE else BERT_TASK_MODELS
    return table[kind]
