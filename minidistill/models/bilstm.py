"""The XtremeDistil BiLSTM student (Mukherjee & Awadallah, 2020), v1 architecture:

    e = E[ids]                                  (B, T, E)  word embeddings (the teacher's, optionally PCA-reduced)
    h = BiLSTM(e)                               (B, T, 2H) (padded steps skipped, as packed sequences)
    m = max over real tokens of h               (B, 2H)    global max-pooling
    r = GELU(m W_rᵀ + b_r)                      (B, D_t)   the representation, matched to the teacher's pooled [CLS]
    z = Dropout(r) W_cᵀ + b_c                   (B, C)     logits

``r`` is returned as ``pooler_output`` so the same objectives compare it with a BERT
teacher's pooler output.

With ``task="token"`` (XtremeDistil's NER setting) nothing is pooled: every token's BiLSTM
state goes through the GELU dense layer and the classifier,

    r_t = GELU(h_t W_rᵀ + b_r)                  (B, T, D_t) per token, matched to a teacher layer's states
    z_t = Dropout(r_t) W_cᵀ + b_c               (B, T, C)   per-token logits

and ``hidden_states`` are (embeddings, BiLSTM output, r), so a hidden-state objective compares
``r`` with any teacher layer over all real tokens. Saved as ``config.json`` (``model_type: minidistill-bilstm``) and
``model.safetensors``; the LSTM's weights keep torch.nn.LSTM's names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..core import functions as F
from ..core.tensor import Tensor
from ..nn.layers import LSTM, Dropout, Embedding, Linear
from ..nn.module import Module, StateDictError
from .. import fileio as io
from .bert import ModelOutput, _classification_loss

MODEL_TYPE = "minidistill-bilstm"


@dataclass
class BiLSTMConfig:
    """Sizes of a :class:`BiLSTMStudent` (defaults: XtremeDistil v1 with a 384-wide teacher)."""

    vocab_size: int = 30522
    embedding_size: int = 300
    hidden_size: int = 600
    representation_size: int = 384
    num_labels: int = 2
    num_layers: int = 1
    dropout: float = 0.2
    pad_token_id: int = 0
    problem_type: str | None = None
    id2label: dict | None = None  # label names (the teacher's), so predictions print them
    task: str = "sequence"  # "sequence": max-pooled sentence logits; "token": logits for every token
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        if self.id2label is not None:
            try:  # JSON keys are strings: back to class ids
                self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"BiLSTMConfig.id2label must map class ids to names, got {self.id2label!r}") from None
            if sorted(self.id2label) != list(range(self.num_labels)):
                raise ValueError(f"BiLSTMConfig.id2label must name classes 0..{self.num_labels - 1}, got {self.id2label!r}")
        for name in ("vocab_size", "embedding_size", "hidden_size", "representation_size", "num_labels", "num_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"BiLSTMConfig.{name} must be a positive integer, got {v!r}")
        if self.task not in ("sequence", "token"):
            raise ValueError(f"BiLSTMConfig.task must be 'sequence' or 'token', got {self.task!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BiLSTMConfig.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, d: dict) -> "BiLSTMConfig":
        """Build from a dict; unknown keys raise (a BERT config is not a BiLSTM one)."""
        if d.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise io.CheckpointError(f"config.json describes a {d.get('model_type')!r} model, not {MODEL_TYPE!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"architectures"})
        if unknown:
            raise ValueError(f"unknown BiLSTMConfig keys: {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


class BiLSTMStudent(Module):
    """Word embeddings → BiLSTM → masked max-pool → GELU dense to the teacher width → classifier."""

    def __init__(self, config: BiLSTMConfig):
        self.config = config
        self.num_labels = config.num_labels
        self.embeddings = Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.lstm = LSTM(config.embedding_size, config.hidden_size, num_layers=config.num_layers,
                         bidirectional=True, dropout=config.dropout)
        self.dropout = Dropout(config.dropout)
        self.dense = Linear(2 * config.hidden_size, config.representation_size)
        self.classifier = Linear(config.representation_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False,
                output_qkv=False) -> ModelOutput:
        """Classify a batch, or every token of it with ``task="token"`` (token_type_ids are
        accepted and unused). ``hidden_states`` are (embeddings, BiLSTM output) when asked for,
        and the per-token representation r third in token mode; a BiLSTM has no attention."""
        if output_attentions or output_attention_scores or output_qkv:
            raise ValueError("a BiLSTM student has no attention maps; use logit, pooled or hidden-state objectives")
        ids = np.asarray(input_ids.numpy() if isinstance(input_ids, Tensor) else input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {ids.shape}")
        mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(
            attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask) != 0  # (B, T)
        e = self.dropout(self.embeddings(ids))  # (B, T, E)
        h = self.lstm(e, mask)  # (B, T, 2H)
        if self.config.task == "token":
            rep = F.gelu(self.dense(self.dropout(h)))  # (B, T, D_t)
            logits = self.classifier(self.dropout(rep))  # (B, T, C)
            loss = None
            if labels is not None:
                raw = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
                loss = F.cross_entropy(logits, logits.backend.asarray(raw), ignore_index=-100)
            return ModelOutput(loss=loss, logits=logits, pooler_output=None, last_hidden_state=rep,
                               hidden_states=(e, h, rep) if output_hidden_states else None,
                               attentions=None, attention_scores=None, qkv=None)
        ops = h.backend
        penalty = ops.asarray((~mask[:, :, None]).astype(np.float64) * -1e4, dtype=h.dtype.name)  # (B, T, 1)
        pooled = F.max(h + Tensor._wrap(penalty, ops), axis=1)  # (B, 2H) over real tokens only
        rep = F.gelu(self.dense(self.dropout(pooled)))  # (B, D_t)
        logits = self.classifier(self.dropout(rep))  # (B, C)
        loss = _classification_loss(logits, labels, self.config) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, pooler_output=rep,
                           hidden_states=(e, h) if output_hidden_states else None,
                           attentions=None, attention_scores=None, qkv=None)

    def layer_groups(self) -> list:
        """Parameter groups from the top, for gradual unfreezing: head, LSTM, embeddings."""
        return [("head", [self.dense, self.classifier]), ("lstm", [self.lstm]), ("embeddings", [self.embeddings])]

    # ------------------------------------------------------------ saving
    def save_pretrained(self, path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``path`` (each atomically)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise io.CheckpointError(f"cannot save into {path}: it is a file")
        path.mkdir(parents=True, exist_ok=True)
        io.save_weights(path / io.SAFE_WEIGHTS, {n: p.numpy() for n, p in self.named_parameters()})
        io.write_json(path / io.CONFIG, {**self.config.to_dict(), "architectures": [type(self).__name__]})
        return path

    @classmethod
    def from_pretrained(cls, path, backend=None, device=None, dtype=None) -> "BiLSTMStudent":
        """Load a folder written by :meth:`save_pretrained` (strict: every weight must fit)."""
        from ..backends import get_backend, use_backend

        path = Path(path)
        config = BiLSTMConfig.from_dict(io.read_config(path))
        weights = io.load_weights(path)
        with use_backend(get_backend(backend, device)):
            model = cls(config)
        try:
            model.load_state_dict(weights)
        except StateDictError as e:
            raise io.CheckpointError(f"{path}: incompatible checkpoint: {e}") from None
        if dtype is not None:
            model.to(dtype=dtype)
        model.eval()
        return model
