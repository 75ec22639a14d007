"""MiniALBERT: a recursive student with cross-layer parameter sharing, factorised embeddings
and per-repeat bottleneck adapters.

Nouriborji, Rohanian, Kouchaki, Clifton: "MiniALBERT: Model Distillation via
Parameter-Efficient Recursive Transformers" (EACL 2023); ALBERT (Lan et al., 2020) for the
sharing and the factorisation.

Embeddings of width E are summed and projected to the hidden width H; one transformer layer
(BERT's, :class:`~minidistill.models.bert.BertLayer`) is run L times; repeat l has its own
adapters (after attention and after the FFN, each ``x + U(GELU(D x))``, D: H → H/16)::

    h_0 = LayerNorm((w + p + t) Pᵀ + b)                  w, p, t ∈ R^E, P ∈ R^{H×E}
    h_l = Layer(h_(l−1); θ_shared, adapters_l)           l = 1 … L

Unique parameters: ``V E + (P + T) E + H E`` for the embeddings, one layer, and L pairs of
adapters ``4 (H k + k + H)`` with k = H / reduction; executed parameters count the shared
layer L times.

Conventions chosen here:

* The LayerNorm comes after the projection (ALBERT normalises the E-wide sum before it).
  The embedding map is then linear up to that LayerNorm, so ``fold(model, unroll=True)``
  turns a MiniALBERT into a plain BERT exactly: ``W_word = w Pᵀ``, ``W_pos = p Pᵀ``,
  ``W_type = t Pᵀ + b`` (each token has exactly one type, so the bias goes there).
* Adapters sit at BERT's Houlsby sites (before the residual sum and the layer's own
  LayerNorm), so a zero up-projection makes an adapter the identity. The original wraps
  each adapter in a LayerNorm of its own (``LN(x + U(GELU(D x)))``):
  ``adapter_layer_norm=True`` does that.
* The shared layer is one module stored once: ``named_parameters()`` and ``save_pretrained``
  see it once, and a loaded model runs the same object L times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..core.tensor import Tensor
from ..nn.adapters import Adapter, AdapterConfig, phm_rule
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module, ModuleList
from .bert import (BertEmbeddings, BertLayer, BertPooler, BertPreTrainedModel, MaskedLMHead, ModelOutput,
                   QuestionAnsweringHead, SequenceHead, TokenHead, keep_mask_from_attention_mask)
from .config import BertConfig


@dataclass
class MiniAlbertConfig(BertConfig):
    """A BERT config plus MiniALBERT's fields; ``num_hidden_layers`` is the number of repeats.

    Attributes:
        embedding_size: E, the width of the embedding tables.
        adapter_reduction: bottleneck k = H / reduction; 0 = no adapters.
        adapter_kind: "dense" or "phm" (PHM adapters sharing one rule: a combination the
            original repos do not offer).
        phm_n: Kronecker terms of PHM adapters.
        adapter_layer_norm: the original's LayerNorm inside each adapter.
    """

    embedding_size: int = 128
    adapter_reduction: int = 16
    adapter_kind: str = "dense"
    phm_n: int = 4
    adapter_layer_norm: bool = False

    MODEL_TYPE: ClassVar[str] = "minialbert"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.embedding_size, int) or self.embedding_size <= 0:
            raise ValueError(f"MiniAlbertConfig.embedding_size must be a positive integer, got {self.embedding_size!r}")
        if not isinstance(self.adapter_reduction, int) or self.adapter_reduction < 0:
            raise ValueError(f"MiniAlbertConfig.adapter_reduction must be 0 (no adapters) or positive, "
                             f"got {self.adapter_reduction!r}")
        if self.adapter_reduction:
            self.adapter_config()  # validates kind and sizes

    def adapter_config(self) -> AdapterConfig | None:
        """The per-repeat adapters' config (None without adapters)."""
        if not self.adapter_reduction:
            return None
        return AdapterConfig(reduction=self.adapter_reduction, kind=self.adapter_kind, phm_n=self.phm_n,
                             layer_norm=self.adapter_layer_norm)


class MiniAlbertEmbeddings(BertEmbeddings):
    """E-wide word, position and token-type tables, summed, projected to H, LayerNorm."""

    def __init__(self, config: MiniAlbertConfig):
        self.config = config
        e = config.embedding_size
        self.word_embeddings = Embedding(config.vocab_size, e, config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, e)
        self.token_type_embeddings = Embedding(config.type_vocab_size, e)
        self.projection = Linear(e, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None) -> Tensor:
        """``input_ids`` (B, T) → (B, T, H)."""
        x = self.embedding_sum(input_ids, token_type_ids, position_ids)  # (B, T, E)
        return self.dropout(self.LayerNorm(self.projection(x)))  # (B, T, H)


class RepeatAdapters(Module):
    """The two adapters of one repeat (``attention``, ``ffn``)."""

    def __init__(self, hidden_size: int, config: AdapterConfig, rule=None, eps: float = 1e-12):
        self.attention = Adapter(hidden_size, config, rule, eps)
        self.ffn = Adapter(hidden_size, config, rule, eps)


class MiniAlbertEncoder(Module):
    """One shared :class:`BertLayer` run ``num_hidden_layers`` times, with per-repeat adapters."""

    def __init__(self, config: MiniAlbertConfig):
        self.num_repeats = config.num_hidden_layers
        self.shared_layer = BertLayer(config)
        acfg = config.adapter_config()
        if acfg is not None:
            rule = phm_rule(acfg.phm_n) if acfg.kind == "phm" else None
            self.adapters = ModuleList([RepeatAdapters(config.hidden_size, acfg, rule, config.layer_norm_eps)
                                        for _ in range(self.num_repeats)])
        else:
            self.adapters = None

    def run_counts(self) -> dict:
        """How many times each child runs per forward (for executed parameters and FLOPs)."""
        return {"shared_layer": self.num_repeats}

    def forward(self, x: Tensor, mask=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False, output_qkv=False):
        """As :class:`~minidistill.models.bert.BertEncoder`: every repeat counts as a layer."""
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        scores_all = [] if output_attention_scores else None
        qkv_all = [] if output_qkv else None
        for r in range(self.num_repeats):
            pair = (self.adapters[r].attention, self.adapters[r].ffn) if self.adapters is not None else None
            x, probs, scores, qkv = self.shared_layer(x, mask, output_attention_scores, output_qkv, adapters=pair,
                                                     return_probs=output_attentions)
            for store, value in ((hidden, x), (attentions, probs), (scores_all, scores), (qkv_all, qkv)):
                if store is not None:
                    store.append(value)
        return x, hidden, attentions, scores_all, qkv_all


class MiniAlbertTaskModel(BertPreTrainedModel):
    """A MiniALBERT encoder (factorised embeddings, one shared layer run L times, per-repeat
    adapters) with a task head mixed in before this class (:class:`~minidistill.models.bert.TaskHead`):
    BERT's pooler when the head reads the pooled vector."""

    config_class = MiniAlbertConfig
    base_model_prefix = "minialbert"

    def __init__(self, config: MiniAlbertConfig):
        if not isinstance(config, MiniAlbertConfig):
            raise TypeError(f"{type(self).__name__} needs a MiniAlbertConfig, got {type(config).__name__}")
        self.config = config = self.head_config(config)
        self.num_labels = config.num_labels
        self.embeddings = MiniAlbertEmbeddings(config)
        self.encoder = MiniAlbertEncoder(config)
        self.pooler = BertPooler(config) if self.needs_pooler else None
        self.init_head(config)
        self.init_weights()

    @property
    def ignored_checkpoint_keys(self):
        """A checkpoint of another head loads (its head skipped); a masked-LM model keeps ``cls.``."""
        base = BertPreTrainedModel.ignored_checkpoint_keys
        return tuple(k for k in base if k != "cls.") if self.kind == "mlm" else base

    def init_weights(self) -> None:
        """BERT's initialisation, then every adapter back to its own (identity) start."""
        super().init_weights()
        for m in self.modules():
            if isinstance(m, Adapter):
                m.reset_parameters()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False,
                output_qkv=False, **targets) -> ModelOutput:
        """As the BERT model of the same head; the L repeats give L hidden states after the
        embeddings' and L attention maps, so distillation objectives and layer maps treat the
        repeats as layers."""
        ops = self.embeddings.word_embeddings.weight.backend
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, H)
        mask = None if attention_mask is None else keep_mask_from_attention_mask(attention_mask, ops)
        h, hidden, attentions, scores, qkv = self.encoder(
            x, mask, output_hidden_states, output_attentions, output_attention_scores, output_qkv)
        pooled = self.pooler(h, attention_mask) if self.pooler is not None else None  # (B, H)
        tup = (lambda v: tuple(v) if v is not None else None)
        out = ModelOutput(last_hidden_state=h, pooler_output=pooled, hidden_states=tup(hidden),
                          attentions=tup(attentions), attention_scores=tup(scores), qkv=tup(qkv))
        return self.head_output(out, labels, **targets)


class MiniAlbertForSequenceClassification(SequenceHead, MiniAlbertTaskModel):
    """A MiniALBERT encoder with BERT's pooler and a linear classifier (a sentence-task student)."""


class MiniAlbertForTokenClassification(TokenHead, MiniAlbertTaskModel):
    """A MiniALBERT encoder with a linear classifier on every token (a tagging student)."""


class MiniAlbertForQuestionAnswering(QuestionAnsweringHead, MiniAlbertTaskModel):
    """A MiniALBERT encoder with HF's ``qa_outputs`` span head (a QA student)."""


class MiniAlbertForMaskedLM(MaskedLMHead, MiniAlbertTaskModel):
    """A MiniALBERT encoder with ALBERT's masked-LM decoder path: the transform maps H → E
    (``cls.predictions.transform``: dense, activation, LayerNorm over E) and the decoder is the
    E-wide word table itself (tied), as the original's general distillation student has it::

        logits = LN_E(act(h W_tᵀ + b_t)) wᵀ + b        W_t ∈ R^{E×H}, w ∈ R^{V×E}
    """


#: the MiniALBERT model class of each head kind
MINIALBERT_TASK_MODELS = {"sequence": MiniAlbertForSequenceClassification, "token": MiniAlbertForTokenClassification,
                          "qa": MiniAlbertForQuestionAnswering, "mlm": MiniAlbertForMaskedLM}


def embedding_tables_from(word: np.ndarray, position: np.ndarray, token_type: np.ndarray, width: int):
    """E-wide tables and the projection that best reproduce H-wide BERT embedding tables:
    ``(word_E, position_E, type_E, P (H, E), b (H,))`` with V the top ``width`` principal
    directions of the word table, ``word_E = (word − mean) V``, ``position_E = position V``,
    ``type_E = type V``, ``P = V``, ``b = mean``; so ``(w + p + t) Pᵀ + b`` is the BERT sum
    projected onto those directions."""
    from ..nn.init import pca_projection

    mean, v = pca_projection(word, width)  # (H,), (H, E)
    return (word - mean) @ v, position @ v, token_type @ v, v, mean
