"""``BertConfig``: the fields of HF's BERT ``config.json``, validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder, named as in HF ``config.json``.

    Keys of a loaded ``config.json`` that minidistill does not use are kept in ``extra`` and
    written back by ``to_dict``, so a checkpoint round-trips unchanged.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    #: what the pooler reads: "cls" (the first token, BERT's) or "mean" (the mean over real
    #: tokens, what sentence-embedding checkpoints are trained for; ModernBERT's name)
    classifier_pooling: str = "cls"
    num_labels: int = 2
    problem_type: str | None = None
    id2label: dict | None = None
    label2id: dict | None = None
    architectures: list | None = None
    extra: dict = field(default_factory=dict, repr=False)

    SUPPORTED_ACTIVATIONS = ("gelu", "relu")
    SUPPORTED_POOLING = ("cls", "mean")
    #: ``model_type`` in ``config.json``
    MODEL_TYPE: ClassVar[str] = "bert"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot describe a BERT."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in self.SUPPORTED_ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act {self.hidden_act!r} is not supported; use one of {self.SUPPORTED_ACTIVATIONS}")
        if not isinstance(self.position_embedding_type, str) or self.position_embedding_type != "absolute":
            raise ValueError(f"BertConfig.position_embedding_type {self.position_embedding_type!r} is not supported (only 'absolute')")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be a probability in [0, 1), got {value!r}")
        if self.classifier_dropout is not None and (not _is_number(self.classifier_dropout)
                                                    or not 0.0 <= self.classifier_dropout < 1.0):
            raise ValueError(f"BertConfig.classifier_dropout must be None or in [0, 1), got {self.classifier_dropout!r}")
        if not isinstance(self.classifier_pooling, str) or self.classifier_pooling not in self.SUPPORTED_POOLING:
            raise ValueError(f"BertConfig.classifier_pooling {self.classifier_pooling!r} is not supported; "
                             f"use one of {self.SUPPORTED_POOLING}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0 or value == float("inf"):
                raise ValueError(f"BertConfig.{name} must be a positive number, got {value!r}")
        if self.pad_token_id is not None and (not isinstance(self.pad_token_id, int) or isinstance(self.pad_token_id, bool)
                                              or not 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"BertConfig.pad_token_id must be a token id below vocab_size, got {self.pad_token_id!r}")
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 1:
            raise ValueError(f"BertConfig.num_labels must be a positive integer, got {self.num_labels!r}")
        for name in ("id2label", "label2id"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"BertConfig.{name} must be a mapping, got {getattr(self, name)!r}")
        if self.id2label:
            try:
                self.id2label = {int(k): v for k, v in self.id2label.items()}
            except (TypeError, ValueError):
                raise ValueError(f"BertConfig.id2label keys must be label ids, got {list(self.id2label)!r}") from None
            if sorted(self.id2label) != list(range(len(self.id2label))):
                raise ValueError(f"BertConfig.id2label must number the labels 0..n-1, got {sorted(self.id2label)}")
            self.num_labels = len(self.id2label)
        for name in ("hidden_act", "position_embedding_type"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"BertConfig.{name} must be a string, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from a ``config.json`` dict; unknown keys go to ``extra``."""
        if not isinstance(d, dict):
            raise ValueError(f"config.json must hold a JSON object, got {type(d).__name__}")
        d = dict(d)
        model_type = d.pop("model_type", cls.MODEL_TYPE)
        if model_type != cls.MODEL_TYPE:
            raise ValueError(f"config.json describes a {model_type!r} model, not a {cls.MODEL_TYPE!r} one "
                             f"(load it with the matching model class)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d.pop(k) for k in list(d) if k in names}
        return cls(**known, extra=d)

    def to_dict(self) -> dict:
        """A ``config.json`` dict that transformers reads as a ``BertConfig``."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        if out.get("id2label"):
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
        for k in ("id2label", "label2id", "problem_type", "classifier_dropout", "architectures"):
            if out.get(k) is None:
                out.pop(k, None)
        if out["classifier_pooling"] == "cls":  # BERT's own: left out, so HF checkpoints round-trip unchanged
            del out["classifier_pooling"]
        out["model_type"] = self.MODEL_TYPE
        return out

    def replace(self, **changes) -> "BertConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # not NaN
