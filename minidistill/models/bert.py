"""BERT, with HF transformers' module tree and weight names.

References: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding" (2019); HF transformers ``models/bert/modeling_bert.py`` for the
names (``encoder.layer.{i}.attention.self.query.weight``, …), so that any BERT checkpoint
loads key by key and every model we save loads back into transformers.

One layer, post-LayerNorm as in the paper:

    a = LayerNorm(x + Dropout(Attention(x) W_o + b_o))
    y = LayerNorm(a + Dropout(GELU(a W_1 + b_1) W_2 + b_2))

Shapes: B batch, T tokens, D hidden, H heads, d = D / H, F intermediate, C labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import functions as F
from ..core.tensor import Tensor
from ..nn import init
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear, MultiHeadSelfAttention
from ..nn.module import Module, ModuleList, Parameter, StateDictError
from ..nn.quantized import describe as describe_quantized
from .. import fileio as io
from .config import BertConfig


class ModelOutput:
    """Named outputs, readable as attributes (``out.logits``) or keys (``out["logits"]``)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __getitem__(self, key):
        return self.__dict__[key]

    def keys(self):
        """Names of the fields that are set."""
        return [k for k, v in self.__dict__.items() if v is not None]

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self.keys())})"


# ------------------------------------------------------------------- modules
class BertEmbeddings(Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        self.config = config
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None) -> Tensor:
        """``input_ids`` (B, T) → embeddings (B, T, D)."""
        return self.dropout(self.LayerNorm(self.embedding_sum(input_ids, token_type_ids, position_ids)))

    def embedding_sum(self, input_ids, token_type_ids=None, position_ids=None) -> Tensor:
        """The checked sum of word, token-type and position embeddings (B, T, width)."""
        ops = self.word_embeddings.weight.backend
        ids = ops.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        if len(ids.shape) != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(ids.shape)}")
        b, t = ids.shape
        cfg = self.config
        if t > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {t} exceeds max_position_embeddings ({cfg.max_position_embeddings}); truncate the input"
            )
        if F.numel(ids) and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={cfg.vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]"
                " (was the text tokenised with another vocabulary?)"
            )
        # BEGIN TASK 3.1
        if position_ids is None:
            position_ids = ops.reshape(ops.arange(t), (1, t))  # (1, T)
        if token_type_ids is None:
            token_type_ids = ops.zeros((b, t), "int64")  # (B, T)
        x = self.word_embeddings(ids)  # (B, T, D)
        x = x + self.token_type_embeddings(token_type_ids)  # (B, T, D)
        return x + self.position_embeddings(position_ids)  # (B, T, D) + (1, T, D)
        # END TASK 3.1


class BertSelfAttention(MultiHeadSelfAttention):
    """``query`` / ``key`` / ``value`` projections and scaled dot-product attention."""

    def __init__(self, config: BertConfig):
        super().__init__(config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob)


class BertSelfOutput(Module):
    """Output projection, dropout, residual and LayerNorm after attention."""

    #: where an adapter inserted here sits (see ``nn/adapters.py``)
    adapter_site = "attention"

    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor, adapter=None) -> Tensor:
        """``LayerNorm(residual + Dropout(h W + b))``; without dropout the residual is fused
        into the projection's epilogue. An adapter (``adapter`` or this module's own
        ``.adapter``) acts on the projection's output before the residual sum (Houlsby)."""
        adapter = adapter if adapter is not None else getattr(self, "adapter", None)
        if adapter is not None:
            y = adapter(self.dropout(self.dense(h))) + residual  # (B, T, D)
        elif self.training and self.dropout.p > 0:
            y = self.dropout(self.dense(h)) + residual  # (B, T, D)
        else:
            y = self.dense(h, residual=residual)  # (B, T, D)
        return self.LayerNorm(y)


class BertAttention(Module):
    """Self-attention followed by its output block."""

    def __init__(self, config: BertConfig):
        # ``self`` is the checkpoint's name for the attention block.
        setattr(self, "self", BertSelfAttention(config))
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, mask=None, return_scores: bool = False, return_qkv: bool = False, adapter=None,
                return_probs: bool = True):
        """Returns ``(output (B, T, D), probs (B, H, T, T) or None, scores or None, (q, k, v) or None)``."""
        context, probs, scores, qkv = getattr(self, "self")(x, mask, return_scores, return_qkv, return_probs)
        return self.output(context, x, adapter), probs, scores, qkv


class BertIntermediate(Module):
    """The FFN's expansion: ``GELU(x W_1 + b_1)``, D → F."""

    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = config.hidden_act

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) → (B, T, F)."""
        h = self.dense(x)  # (B, T, F)
        return F.gelu(h) if self.act == "gelu" else F.relu(h)


class BertOutput(BertSelfOutput):
    """The FFN's contraction F → D, dropout, residual and LayerNorm."""

    adapter_site = "ffn"

    def __init__(self, config: BertConfig):
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)


class BertLayer(Module):
    """One transformer layer: attention block then feed-forward block."""

    def __init__(self, config: BertConfig):
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, mask=None, return_scores: bool = False, return_qkv: bool = False, adapters=None,
                return_probs: bool = True):
        """Returns ``(hidden (B, T, D), probs (B, H, T, T) or None, scores or None, (q, k, v) or None)``.
        ``return_probs=False`` lets the attention use a fused kernel (no (T, T) map is kept).

        ``adapters``: an optional ``(attention_adapter, ffn_adapter)`` pair used for this call
        instead of the layer's own (a shared layer run with per-repeat adapters: MiniALBERT).
        """
        attn_adapter, ffn_adapter = adapters if adapters is not None else (None, None)
        # BEGIN TASK 3.3
        a, probs, scores, qkv = self.attention(x, mask, return_scores, return_qkv, attn_adapter, return_probs)
        return self.output(self.intermediate(a), a, ffn_adapter), probs, scores, qkv
        # END TASK 3.3


class BertEncoder(Module):
    """A stack of ``num_hidden_layers`` layers."""

    def __init__(self, config: BertConfig):
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: Tensor, mask=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False, output_qkv=False):
        """Run every layer; collect hidden states (embeddings first), attention maps, scores
        and per-layer (q, k, v)."""
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        scores_all = [] if output_attention_scores else None
        qkv_all = [] if output_qkv else None
        for layer in self.layer:
            x, probs, scores, qkv = layer(x, mask, output_attention_scores, output_qkv, return_probs=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(probs)
            if scores_all is not None:
                scores_all.append(scores)
            if qkv_all is not None:
                qkv_all.append(qkv)
        return x, hidden, attentions, scores_all, qkv_all


def mean_over_tokens(h: Tensor, attention_mask=None) -> Tensor:
    """(B, T, D) → (B, D): the mean of the real tokens' vectors, ``Σₜ mₜ hₜ / Σₜ mₜ`` with the
    (B, T) 0/1 ``attention_mask`` m (every token's mean without one). A row with no real token
    gives zeros rather than a division by zero."""
    if attention_mask is None:
        return h.mean(axis=1)  # (B, D)
    ops = h.backend
    m = ops.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
    if tuple(m.shape) != tuple(h.shape[:2]):
        raise ValueError(f"attention_mask shape {tuple(m.shape)} does not match the hidden states' {tuple(h.shape[:2])}")
    m = ops.cast(m != 0, h.dtype)  # (B, T)
    w = m / ops.maximum(ops.sum(m, axis=1, keepdims=True), 1.0)  # (B, T), each row sums to 1
    return (h * Tensor._wrap(ops.reshape(w, (*w.shape, 1)), ops)).sum(axis=1)  # (B, D)


class BertPooler(Module):
    """``tanh(W s + b)``: the pooled sentence representation, where the summary s is the first
    token's hidden state (``config.classifier_pooling = "cls"``, BERT's) or the mean over the real
    tokens (``"mean"``, what sentence-embedding checkpoints such as all-MiniLM-L6-v2 are trained
    to be read by)."""

    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.pooling = config.classifier_pooling

    def forward(self, h: Tensor, attention_mask=None) -> Tensor:
        """(B, T, D) → (B, D) from the first token, or from the mean over tokens where
        ``attention_mask`` (B, T) is 1 (mean pooling)."""
        if self.pooling == "mean":
            return F.tanh(self.dense(mean_over_tokens(h, attention_mask)))  # (B, D)
        # BEGIN TASK 3.4
        return F.tanh(self.dense(h[:, 0]))
        # END TASK 3.4


# -------------------------------------------------------------------- models
class BertPreTrainedModel(Module):
    """Shared machinery: HF-style initialisation, ``from_pretrained`` and ``save_pretrained``."""

    config: BertConfig
    config_class = BertConfig
    base_model_prefix = "bert"
    #: checkpoint keys that are not weights of ours and are skipped silently on load
    ignored_checkpoint_keys = ("embeddings.position_ids", "cls.", "lm_head.")

    def init_weights(self) -> None:
        """HF BERT's initialisation: N(0, initializer_range) for Linear and Embedding
        weights (padding row zeroed), zero biases, LayerNorm γ = 1 and β = 0."""
        std = self.config.initializer_range
        tables = {id(m.weight) for m in self.modules() if isinstance(m, Embedding)}
        for m in self.modules():
            if isinstance(m, Linear):
                if id(m.weight) not in tables:  # a decoder tied to an embedding is initialised as the embedding
                    m.weight.data = m.weight.backend.asarray(init.normal(m.weight.shape, std))
                if m.bias is not None:
                    m.bias.data = m.bias.backend.zeros(m.bias.shape, m.bias.dtype.name)
            elif isinstance(m, Embedding):
                w = init.normal(m.weight.shape, std)
                if m.padding_idx is not None:
                    w[m.padding_idx] = 0.0
                m.weight.data = m.weight.backend.asarray(w)
            elif isinstance(m, LayerNorm):
                m.weight.data = m.weight.backend.asarray(init.ones(m.weight.shape))
                m.bias.data = m.bias.backend.asarray(init.zeros(m.bias.shape))

    # ------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path, backend=None, device=None, dtype=None, **config_overrides):
        """Load a local HF BERT folder (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``).

        Keys with or without the ``bert.`` prefix are accepted. Weights the checkpoint lacks
        for a task head (classifier) keep their fresh initialisation and are reported in
        ``model.loading_info["newly_initialized"]``; any other missing, unexpected or
        mis-shaped key raises :class:`~minidistill.fileio.CheckpointError`.

        Args:
            path: the checkpoint folder.
            backend: the backend the model lives on (default: the current backend).
            device: its device (torch backend).
            dtype: cast weights (e.g. ``"float64"`` for checks).
            config_overrides: config fields to change (e.g. ``num_labels=3``: a saved task head
                of another size is then left out and the head starts fresh, as listed in
                ``loading_info["newly_initialized"]``).
        """
        from ..backends import get_backend, use_backend

        path = Path(path)
        saved = io.read_config(path)
        try:
            config = cls.config_class.from_dict({**saved, **config_overrides})
        except (TypeError, ValueError) as e:
            raise io.CheckpointError(f"{path}: {e}") from None
        weights = _normalise_keys(io.load_weights(path))
        if "num_labels" in config_overrides and config_overrides["num_labels"] != saved.get("num_labels", 2):
            # asked for another label set: the saved head does not fit and is replaced by a fresh one
            for k in [k for k in weights if k.startswith(("classifier.", "qa_outputs."))]:
                weights.pop(k)
        with use_backend(get_backend(backend, device)):
            model = cls(config)
            if "adapters" in config.extra:  # a model saved with adapters: rebuild them first
                from ..nn.adapters import AdapterConfig, add_adapters

                try:
                    add_adapters(model, AdapterConfig.from_dict(config.extra["adapters"]))
                except (TypeError, ValueError) as e:
                    raise io.CheckpointError(f"{path}: config.json has a bad 'adapters' entry: {e}") from None
            if "quantization" in config.extra:  # an int8 model: its int8 layers are rebuilt empty
                from ..nn.quantized import QuantizedLayout, restore

                try:
                    restore(model, QuantizedLayout.from_dict(config.extra["quantization"]))
                except (TypeError, ValueError) as e:
                    raise io.CheckpointError(f"{path}: config.json has a bad 'quantization' entry: {e}") from None
        if dtype is not None:  # before loading, so float64 weights arrive unrounded
            model.to(dtype=dtype)
        try:
            model.loading_info = model._load_checkpoint_weights(weights, path)
        except io.CheckpointError as e:
            if "quantization" not in config.extra:
                raise
            raise io.CheckpointError(f"{e} (config.json describes an int8 model: do the weights match it?)") from None
        model.eval()
        return model

    def _load_checkpoint_weights(self, weights: dict, path, skip=()) -> dict:
        own = {k: p for k, p in self.named_parameters(remove_duplicate=False) if k not in skip}
        prefix = self.base_model_prefix + "."
        has_base = any(k.startswith(prefix) for k in own)
        ckpt_has_prefix = any(k.startswith(prefix) for k in weights)
        mapped = {}
        for k, v in weights.items():
            if ckpt_has_prefix and not has_base and k.startswith(prefix):
                k = k[len(prefix):]  # a task checkpoint loaded into BertModel
            elif has_base and not ckpt_has_prefix and not k.startswith(("classifier.", "qa_outputs.")):
                k = prefix + k  # a bare encoder loaded into a task model
            mapped[k] = v
        ignored = [k for k in mapped if _is_ignored(k, self.ignored_checkpoint_keys, prefix)]
        for k in ignored:
            mapped.pop(k)
        if not has_base and not self.head_parameter_names():  # BertModel: a checkpoint's task head is not ours
            for k in [k for k in mapped if k.startswith(("classifier.", "qa_outputs."))]:
                ignored.append(k)
                mapped.pop(k)
        # Weights a checkpoint may lack: the task head, and the pooler when it has none at all.
        optional = set(self.head_parameter_names())
        if not any(".pooler." in f".{k}" for k in mapped):
            optional |= {k for k in own if ".pooler." in f".{k}"}
        missing = [k for k in own if k not in mapped]
        newly_initialized = [k for k in missing if k in optional]
        missing = [k for k in missing if k not in optional]
        unexpected = [k for k in mapped if k not in own]
        if missing:
            raise io.CheckpointError(
                f"{path}: the checkpoint lacks weights this {type(self).__name__} needs: {', '.join(missing[:8])}"
                + (" …" if len(missing) > 8 else "")
            )
        if unexpected:
            raise io.CheckpointError(
                f"{path}: the checkpoint has weights this {type(self).__name__} does not: {', '.join(unexpected[:8])}"
                + (" …" if len(unexpected) > 8 else "")
            )
        try:
            self.load_state_dict(mapped, strict=False)
        except StateDictError as e:
            raise io.CheckpointError(f"{path}: incompatible checkpoint: {e} (does config.json match the weights?)") from None
        return {"newly_initialized": newly_initialized, "ignored": ignored}

    def head_parameter_names(self) -> list[str]:
        """Parameters of the task head, which a base checkpoint may lack."""
        return []

    # ------------------------------------------------------------- saving
    def save_pretrained(self, path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (HF format) into ``path``.

        Each file is written atomically. An int8 model (``minidistill.quantize``) records which
        layers are int8 under ``quantization`` in ``config.json``; its int8 weights are stored
        as int8 tensors with their scales beside them (minidistill and ONNX export read it;
        transformers does not). A parameter reachable under several names (a PHM
        rule shared by every adapter, a layer shared by every repeat) is stored once, under
        its first name; the other names are recorded in the file's metadata and point at it
        again on loading, so sharing survives the round trip.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise io.CheckpointError(f"cannot save into {path}: it is a file")
        path.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        layout = describe_quantized(self)  # which layers are int8, read off the modules themselves
        if layout is not None:
            config["quantization"] = layout.to_dict()
        else:
            config.pop("quantization", None)
        tensors, aliases = io.unique_tensors(self.named_parameters(remove_duplicate=False))
        io.save_weights(path / io.SAFE_WEIGHTS, tensors, io.alias_metadata(aliases))
        io.write_json(path / io.CONFIG, config)
        return path


def _normalise_keys(weights: dict) -> dict:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    # BEGIN TASK 3.5
    out = {}
    for k, v in weights.items():
        if k.endswith(".gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith(".beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out
    # END TASK 3.5


def _is_ignored(key: str, patterns, prefix: str) -> bool:
    bare = key[len(prefix):] if key.startswith(prefix) else key
    return any(bare.startswith(p) or key.startswith(p) for p in patterns)


def keep_mask_from_attention_mask(attention_mask, ops):
    """(B, T) 0/1 attention mask → boolean keep-mask (B, 1, 1, T) over attention keys."""
    m = ops.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
    if len(m.shape) != 2:
        raise ValueError(f"attention_mask must be (batch, tokens), got shape {tuple(m.shape)}")
    # BEGIN TASK 3.2
    b, t = m.shape
    return ops.reshape(m != 0, (b, 1, 1, t))
    # END TASK 3.2


class BertModel(BertPreTrainedModel):
    """The BERT encoder with an optional pooler (HF ``BertModel``)."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                output_attention_scores: bool = False, output_qkv: bool = False) -> ModelOutput:
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids. attention_mask: (B, T), 1 for real tokens, 0 for
                padding. token_type_ids: (B, T) segment ids.
            output_hidden_states: also return the embeddings and every layer's output.
            output_attentions: also return every layer's attention probabilities.
            output_attention_scores: also return the pre-softmax scores (for distillation).
            output_qkv: also return every layer's ``(q, k, v)``, each (B, H, T, d) (MiniLM relations).

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, T, D), ``pooler_output`` (B, D)
            and, when asked, ``hidden_states`` (L+1 × (B, T, D)), ``attentions`` and
            ``attention_scores`` (L × (B, H, T, T)).
        """
        ops = self.embeddings.word_embeddings.weight.backend
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, D)
        mask = None if attention_mask is None else keep_mask_from_attention_mask(attention_mask, ops)
        if mask is not None and tuple(mask.shape)[::3] != x.shape[:2]:
            raise ValueError(f"attention_mask shape {(mask.shape[0], mask.shape[3])} does not match input_ids {x.shape[:2]}")
        h, hidden, attentions, scores, qkv = self.encoder(
            x, mask, output_hidden_states, output_attentions, output_attention_scores, output_qkv
        )
        pooled = self.pooler(h, attention_mask) if self.pooler is not None else None  # (B, D)
        return ModelOutput(
            last_hidden_state=h,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            attention_scores=tuple(scores) if scores is not None else None,
            qkv=tuple(qkv) if qkv is not None else None,
        )


# ------------------------------------------------------------------ task heads
class TaskHead:
    """A task head, mixed into a model class that has an encoder (BERT, MiniALBERT …).

    A head says what it reads (``needs_pooler``: the pooled [CLS] vector, else every token's
    state), builds its layers (:meth:`init_head`, HF's names) and turns an encoder's output
    into the task's output and loss (:meth:`head_output`). Every compression method that
    computes its own encoder pass (Theseus's mixed layers, MiniALBERT's recursion, WID's
    compacted maps) finishes it with ``model.head_output``, so every head combines with every
    method; ``TASK_HEADS[kind]`` finds the head of a task kind.
    """

    kind = ""
    needs_pooler = False
    head_linears: tuple = ()  # the head's linear maps by attribute name (WID compacts their inputs)

    @staticmethod
    def head_config(config):
        """The config the head needs (a head may fix a field, as QA fixes ``num_labels = 2``)."""
        return config

    def init_head(self, config) -> None:  # pragma: no cover - interface
        """Create the head's layers."""
        raise NotImplementedError

    def head_parameter_names(self):
        """The head's parameter names (what a checkpoint of another task lacks)."""
        return [f"{name}.{w}" for name in self.head_linears for w in ("weight", "bias")]

    def head_modules(self) -> list:
        """The head's modules (trained first when unfreezing gradually)."""
        return [getattr(self, name) for name in self.head_linears]

    def head_output(self, out, labels=None, **targets):  # pragma: no cover - interface
        """The task's output from an encoder output (``last_hidden_state``, ``pooler_output``)."""
        raise NotImplementedError


def _dropout_of(config) -> Dropout:
    return Dropout(config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob)


class SequenceHead(TaskHead):
    """Dropout and a linear classifier on the pooled [CLS] vector: logits (B, C); the loss is
    cross-entropy on ``labels`` (B,), or MSE when ``num_labels == 1`` (regression)."""

    kind = "sequence"
    needs_pooler = True
    head_linears = ("classifier",)

    def init_head(self, config) -> None:
        """``dropout`` and ``classifier`` (hidden → num_labels)."""
        self.dropout = _dropout_of(config)
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def head_output(self, out, labels=None) -> ModelOutput:
        """Logits (B, C) from ``out.pooler_output`` (B, D), and the loss with ``labels``."""
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, C)
        loss = None
        if labels is not None:
            loss = _classification_loss(logits, labels, self.config)
        return _task_output(out, loss=loss, logits=logits)


class TokenHead(TaskHead):
    """Dropout and a linear classifier on every token's state: logits (B, T, C); the loss is
    cross-entropy on ``labels`` (B, T) over the positions not -100."""

    kind = "token"
    head_linears = ("classifier",)

    def init_head(self, config) -> None:
        """``dropout`` and ``classifier`` (hidden → num_labels)."""
        self.dropout = _dropout_of(config)
        self.classifier = Linear(config.hidden_size, config.num_labels)

    def head_output(self, out, labels=None) -> ModelOutput:
        """Logits (B, T, C) from ``out.last_hidden_state`` (B, T, D), and the loss with ``labels``."""
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, C)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, _as_labels(labels, logits), ignore_index=-100)
        return _task_output(out, loss=loss, logits=logits)


class QuestionAnsweringHead(TaskHead):
    """A linear map giving every token a start and an end logit (HF's ``qa_outputs``).

    Targets are ``labels`` (B, 2) or ``start_positions`` / ``end_positions`` (B,); the loss is
    the mean of the start and end cross-entropies over the positions, a target outside the
    sequence ignored (HF's rule)."""

    kind = "qa"
    head_linears = ("qa_outputs",)

    @staticmethod
    def head_config(config):
        """Two outputs, start and end: ``num_labels`` is 2 (what transformers sizes the layer by)."""
        if config.num_labels == 2:
            return config
        return config.replace(num_labels=2, id2label=None, label2id=None, extra=dict(config.extra))

    def init_head(self, config) -> None:
        """``qa_outputs`` (hidden → 2)."""
        self.qa_outputs = Linear(config.hidden_size, 2)

    def head_output(self, out, labels=None, start_positions=None, end_positions=None) -> ModelOutput:
        """Start and end logits (B, T), ``logits`` (B, T, 2) both, and the loss with targets."""
        both = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        b, t = both.shape[0], both.shape[1]
        start_logits = both[:, :, 0].reshape(b, t)  # (B, T)
        end_logits = both[:, :, 1].reshape(b, t)  # (B, T)
        if labels is not None:
            raw = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels).reshape(-1, 2)
            start_positions, end_positions = raw[:, 0], raw[:, 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (_span_loss(start_logits, start_positions) + _span_loss(end_logits, end_positions)) * 0.5
        return _task_output(out, loss=loss, logits=both, start_logits=start_logits, end_logits=end_logits)


class BertPredictionHeadTransform(Module):
    """The masked-LM head's transform, ``LayerNorm(act(h W_tᵀ + b_t))`` (D → D), HF's names."""

    def __init__(self, config: BertConfig, out_size: int | None = None):
        out = out_size or config.hidden_size  # the decoder's width (ALBERT-style factorised tables: E)
        self.dense = Linear(config.hidden_size, out)
        self.act = config.hidden_act
        self.LayerNorm = LayerNorm(out, eps=config.layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        """(B, T, D) → (B, T, D_out)."""
        x = self.dense(h)  # (B, T, D)
        return self.LayerNorm(F.gelu(x) if self.act == "gelu" else F.relu(x))


class BertLMPredictionHead(Module):
    """``cls.predictions``: the transform, then the decoder to the vocabulary, whose weight *is*
    the word-embedding table (tied: one Parameter under two names) and whose bias is
    ``cls.predictions.bias`` (HF ties ``decoder.bias`` to it)."""

    def __init__(self, config: BertConfig, word_embeddings: Parameter):
        width = word_embeddings.shape[1]  # D, or E for factorised embeddings
        self.transform = BertPredictionHeadTransform(config, width)
        self.bias = Parameter(np.zeros(config.vocab_size, dtype=np.float32))
        self.decoder = Linear(width, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings  # (V, D), tied
        self.decoder.bias = self.bias

    def forward(self, h: Tensor) -> Tensor:
        """(B, T, D) → logits (B, T, V)."""
        return self.decoder(self.transform(h))  # (B, T, V)


class BertOnlyMLMHead(Module):
    """``cls``: holds ``predictions`` (HF's module tree)."""

    def __init__(self, config: BertConfig, word_embeddings: Parameter):
        self.predictions = BertLMPredictionHead(config, word_embeddings)

    def forward(self, h: Tensor) -> Tensor:
        """(B, T, D) → (B, T, V)."""
        return self.predictions(h)


class MaskedLMHead(TaskHead):
    """BERT's masked-language-model head (``cls.predictions``): logits over the vocabulary at
    every position, the decoder tied to the word embeddings; the loss is cross-entropy on
    ``labels`` (B, T) over the positions not -100 (the masked ones)."""

    kind = "mlm"

    @property
    def tied_weights(self) -> dict:
        """Tied names → the parameter they are (transformers stores them once, under the second)."""
        table = "bert.embeddings.word_embeddings.weight" if hasattr(self, "bert") else "embeddings.word_embeddings.weight"
        return {"cls.predictions.decoder.weight": table, "cls.predictions.decoder.bias": "cls.predictions.bias"}

    def init_head(self, config) -> None:
        """``cls.predictions`` with its decoder tied to this model's word embeddings."""
        self.cls = BertOnlyMLMHead(config, self.word_embeddings().weight)

    def word_embeddings(self):
        """The word-embedding table the decoder is tied to (its width is the decoder's)."""
        return (self.bert if hasattr(self, "bert") else self).embeddings.word_embeddings

    def head_parameter_names(self):
        """The head's own weights (a checkpoint without ``cls.*`` leaves them fresh)."""
        return ["cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"]

    def head_modules(self) -> list:
        """The transform and the bias (the decoder's weight is the embeddings')."""
        return [self.cls.predictions.transform]

    def _load_checkpoint_weights(self, weights: dict, path) -> dict:
        """Tied weights (the masked-LM decoder) are their sources: a checkpoint that stores them
        again (older transformers did) must agree with the source, and one that omits them
        (transformers now, and our own files) loads as it is."""
        tied = self.tied_weights
        weights = dict(weights)
        for name, source in tied.items():
            if name not in weights:
                continue
            src = weights.get(source)
            if src is None and source.startswith("bert."):
                src = weights.get(source[len("bert."):])  # a checkpoint without the bert. prefix
            if src is not None and (np.shape(src) != np.shape(weights[name]) or not np.array_equal(src, weights[name])):
                raise io.CheckpointError(f"{path}: {name} differs from {source}, which it is tied to; "
                                         "an untied masked-LM head is not a BERT checkpoint")
            weights.pop(name)
        return super()._load_checkpoint_weights(weights, path, skip=set(tied))

    def head_output(self, out, labels=None, masked_positions=None) -> ModelOutput:
        """Logits (B, T, V) from ``out.last_hidden_state``, and the loss with ``labels``.

        With ``masked_positions`` (B, T) (non-zero where a token was masked; the batch's
        ``token_mask``), only those positions are decoded, as BERT's pre-training code does:
        logits (N, V) for the N masked positions in row-major order, ``labels`` taken at the same
        positions. The decoder over the whole vocabulary is most of a small student's cost, and
        only masked positions enter the masked-LM loss and the KD on its logits.
        """
        h = out.last_hidden_state  # (B, T, D)
        raw = None if labels is None else np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
        if masked_positions is not None:
            m = np.asarray(masked_positions.numpy() if isinstance(masked_positions, Tensor) else masked_positions)
            if m.shape != tuple(h.shape[:2]):
                raise ValueError(f"masked_positions has shape {m.shape}, the inputs {tuple(h.shape[:2])}")
            rows = np.flatnonzero(m.reshape(-1) != 0)  # (N,)
            h = h.reshape(-1, h.shape[-1])[rows]  # (N, D)
            raw = None if raw is None else raw.reshape(-1)[rows]  # (N,)
        logits = self.cls(h)  # (B, T, V) or (N, V)
        loss = None
        if raw is not None:
            loss = F.cross_entropy(logits, _as_labels(raw, logits), ignore_index=-100)
        return _task_output(out, loss=loss, logits=logits)


TASK_HEADS = {"sequence": SequenceHead, "token": TokenHead, "qa": QuestionAnsweringHead, "mlm": MaskedLMHead}


def head_kind(model) -> str | None:
    """The task kind of a model's head (``sequence``, ``token``, ``qa``), None for a bare encoder."""
    for kind, head in TASK_HEADS.items():
        if isinstance(model, head):
            return kind
    inner = getattr(model, "successor", None) or getattr(model, "model", None)
    return head_kind(inner) if isinstance(inner, Module) and inner is not model else None


def head_inputs(model, batch: dict) -> dict:
    """Extra forward arguments a model's head takes from a batch: a masked-LM model decodes only
    the masked positions of a masked batch (``masked_positions`` = its ``token_mask``)."""
    if head_kind(model) == "mlm" and batch.get("token_mask") is not None:
        return {"masked_positions": batch["token_mask"]}
    return {}


def _task_output(out, **head) -> ModelOutput:
    """A task model's output: the head's fields and the encoder's states passed through."""
    keep = {k: getattr(out, k, None) for k in ("hidden_states", "attentions", "attention_scores", "qkv",
                                               "pooler_output", "last_hidden_state")}
    return ModelOutput(**keep, **head)


class BertTaskModel(BertPreTrainedModel):
    """A BERT encoder (``bert``) with a task head (a :class:`TaskHead` mixed in before this class)."""

    def __init__(self, config: BertConfig):
        self.config = config = self.head_config(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=self.needs_pooler)
        self.init_head(config)
        self.init_weights()

    @property
    def ignored_checkpoint_keys(self):
        """A checkpoint of another task loads: its pooler (when this head has none) and the other
        heads' layers are skipped (listed in ``loading_info["ignored"]``), as transformers does."""
        base = BertPreTrainedModel.ignored_checkpoint_keys + ("pooler.",) * (not self.needs_pooler)
        if self.kind == "mlm":
            base = tuple(k for k in base if k != "cls.")
        others = {f"{name}." for head in TASK_HEADS.values() for name in head.head_linears} - {
            f"{name}." for name in self.head_linears}
        return base + tuple(sorted(others))

    def layer_groups(self) -> list:
        """Parameter groups from the top, for gradual unfreezing: head (and pooler), the layers
        from the last down, embeddings."""
        top = self.head_modules() + ([self.bert.pooler] if self.bert.pooler is not None else [])
        layers = [(f"layer.{i}", [layer]) for i, layer in reversed(list(enumerate(self.bert.encoder.layer)))]
        return [("head", top)] + layers + [("embeddings", [self.bert.embeddings])]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_hidden_states=False, output_attentions=False, output_attention_scores=False,
                output_qkv=False, **targets) -> ModelOutput:
        """The encoder, then the head (see the head's ``head_output`` for the outputs and the
        loss); ``labels`` (or a QA head's ``start_positions`` / ``end_positions``) add the loss."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_hidden_states, output_attentions, output_attention_scores, output_qkv)
        return self.head_output(out, labels, **targets)


class BertForSequenceClassification(SequenceHead, BertTaskModel):
    """BERT with dropout and a linear classifier on the pooled output (HF names)."""


class BertForTokenClassification(TokenHead, BertTaskModel):
    """BERT with dropout and a linear classifier on every token (HF names, no pooler)."""


class BertForQuestionAnswering(QuestionAnsweringHead, BertTaskModel):
    """BERT with a linear layer giving every token a start and an end logit (HF's
    ``qa_outputs``, no pooler): extractive question answering."""


class BertForMaskedLM(MaskedLMHead, BertTaskModel):
    """BERT with its masked-language-model head (HF's ``cls.predictions``, decoder tied to the
    word embeddings, no pooler)."""


#: the BERT model class of each head kind
BERT_TASK_MODELS = {"sequence": BertForSequenceClassification, "token": BertForTokenClassification,
                    "qa": BertForQuestionAnswering, "mlm": BertForMaskedLM}


def _span_loss(logits: Tensor, positions) -> Tensor:
    """Cross-entropy over the T positions, a target outside 0..T-1 clamped to T and ignored."""
    t = logits.shape[1]
    raw = np.asarray(positions.numpy() if isinstance(positions, Tensor) else positions).reshape(-1).astype(np.int64)
    raw = np.clip(raw, 0, t)
    raw = np.where(raw == t, -100, raw)
    return F.cross_entropy(logits, logits.backend.asarray(raw), ignore_index=-100)


def _as_labels(labels, logits: Tensor):
    return logits.backend.asarray(labels.data if isinstance(labels, Tensor) else np.asarray(labels))


def _classification_loss(logits: Tensor, labels, config: BertConfig) -> Tensor:
    """Cross-entropy for integer labels, MSE for regression (one output)."""
    raw = _as_labels(labels, logits)
    if config.num_labels == 1 or config.problem_type == "regression":
        target = Tensor._wrap(logits.backend.cast(logits.backend.reshape(raw, logits.shape), logits.dtype.name), logits.backend)
        return F.mse_loss(logits, target)
    return F.cross_entropy(logits, raw)
