"""Models: BERT with HF names and checkpoint loading/saving; the XtremeDistil BiLSTM student;
the MiniALBERT recursive student."""

from .bert import (
    BertEmbeddings,
    BertEncoder,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertLayer,
    BertModel,
    BertPreTrainedModel,
    ModelOutput,
)
from .bilstm import BiLSTMConfig, BiLSTMStudent
from .config import BertConfig
from ..fileio import CheckpointError
from .minialbert import MiniAlbertConfig, MiniAlbertForSequenceClassification

__all__ = [
    "BiLSTMConfig",
    "BiLSTMStudent",
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertLayer",
    "BertModel",
    "BertPreTrainedModel",
    "CheckpointError",
    "MiniAlbertConfig",
    "MiniAlbertForSequenceClassification",
    "ModelOutput",
]
