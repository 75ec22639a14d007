"""Models: BERT with HF names and checkpoint loading/saving; the XtremeDistil BiLSTM student;
the MiniALBERT recursive student."""

from .bert import (
    BertEmbeddings,
    BertEncoder,
    BertForMaskedLM,
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
from .minialbert import (MiniAlbertConfig, MiniAlbertForMaskedLM, MiniAlbertForQuestionAnswering,
                         MiniAlbertForSequenceClassification, MiniAlbertForTokenClassification)
from .bert import BERT_TASK_MODELS, TASK_HEADS, TaskHead, head_inputs, head_kind
from .auto import load_model, model_class

__all__ = [
    "BiLSTMConfig",
    "BiLSTMStudent",
    "BertConfig",
    "BertEmbeddings",
    "BertEncoder",
    "BertForMaskedLM",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertLayer",
    "BertModel",
    "BertPreTrainedModel",
    "CheckpointError",
    "MiniAlbertConfig",
    "MiniAlbertForMaskedLM",
    "MiniAlbertForQuestionAnswering",
    "MiniAlbertForSequenceClassification",
    "MiniAlbertForTokenClassification",
    "BERT_TASK_MODELS",
    "TASK_HEADS",
    "TaskHead",
    "head_kind",
    "head_inputs",
    "load_model",
    "model_class",
    "ModelOutput",
]
