"""Models: BERT with HF names and checkpoint loading/saving."""

from .bert import (
    BertEmbeddings,
    BertEncoder,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLayer,
    BertModel,
    BertPreTrainedModel,
    ModelOutput,
)
from .config import BertConfig
from .io import CheckpointError

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertLayer",
    "BertModel",
    "BertPreTrainedModel",
    "CheckpointError",
    "ModelOutput",
]
