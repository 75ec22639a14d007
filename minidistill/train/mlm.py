"""Masked-LM evaluation, and a masked-LM head fitted to a frozen encoder.

Checkpoints trained for sentence embeddings (all-MiniLM-L6-v2, our real teacher) ship no
``cls.*`` weights, so their masked-LM logits mean nothing until a head is fitted:
:func:`fit_mlm_head` trains only ``cls.predictions`` (transform, LayerNorm, bias; the decoder
is the frozen word-embedding table it is tied to) on masked raw text, the encoder frozen, so the
encoder is exactly the checkpoint's and the head reads what it already computes.

:func:`evaluate_masked_lm` scores a masked-LM model on masked batches: the share of masked
positions whose top prediction is the original token, and the perplexity
``exp(mean cross-entropy over the masked positions)``. Use a data set with a fixed masking
seed so that every model is scored on the same masks.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.tensor import no_grad
from ..data.datasets import model_inputs
from .trainer import Trainer, TrainConfig


def evaluate_masked_lm(model, tokenizer, data, batch_size: int = 32, max_length: int = 128,
                       max_batches: int | None = None) -> dict:
    """``{"masked_accuracy", "perplexity", "loss", "masked_tokens"}`` over the masked positions
    of ``data``'s batches (a masked :class:`~minidistill.data.PackedCorpus`), in order."""
    if getattr(data, "masking", None) is None:
        raise ValueError("evaluate_masked_lm needs masked data (a PackedCorpus with a MaskingCollator)")
    model.eval()
    total = correct = 0
    nll = 0.0
    with no_grad():
        for k, batch in enumerate(data.batches(tokenizer, batch_size, max_length, shuffle=False)):
            if max_batches is not None and k >= max_batches:
                break
            keep = batch["labels"] != -100  # (B, T)
            z = model(**model_inputs(batch), masked_positions=keep).logits.numpy().astype(np.float64)  # (N, V)
            gold = batch["labels"][keep]  # (N,)
            z = z - z.max(-1, keepdims=True)
            logp = z[np.arange(len(gold)), gold] - np.log(np.exp(z).sum(-1))
            nll -= float(logp.sum())
            correct += int((z.argmax(-1) == gold).sum())
            total += int(len(gold))
    loss = nll / max(total, 1)
    return {"masked_accuracy": correct / max(total, 1), "perplexity": math.exp(loss), "loss": loss,
            "masked_tokens": total}


def fit_mlm_head(model, tokenizer, train_data, config: TrainConfig | None = None) -> Trainer:
    """Train only the masked-LM head of ``model`` (a ``BertForMaskedLM``) on masked
    ``train_data``; the encoder and the tied word embeddings stay frozen. Returns the Trainer."""
    if getattr(model, "kind", None) != "mlm":
        raise TypeError(f"fit_mlm_head needs a masked-LM model (BertForMaskedLM), got {type(model).__name__}")
    if getattr(train_data, "masking", None) is None:
        raise ValueError("fit_mlm_head needs masked data (a PackedCorpus with a MaskingCollator)")
    model.requires_grad_(False)
    head = model.cls.predictions
    for p in (head.transform.dense.weight, head.transform.dense.bias, head.transform.LayerNorm.weight,
              head.transform.LayerNorm.bias, head.bias):
        p.requires_grad = True
    def masked_loss(m, batch):  # the decoder runs on the masked positions only
        return m(**model_inputs(batch), labels=batch["labels"], masked_positions=batch["labels"] != -100).loss

    trainer = Trainer(model, tokenizer, train_data, None, config or TrainConfig(lr=1e-3, max_steps=500),
                      compute_loss=masked_loss)
    trainer.train()
    return trainer
