"""Models: BERT with HF names and checkpoint loading/saving; the XtremeDistil BiLSTM student."""

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
from .bilstm import BiLSTMConfig, BiLSTMStudent
from .config import BertConfig
from .io import CheckpointError

__all__ = [
    "BiLSTMConfig",
    "BiLSTMStudent",
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
