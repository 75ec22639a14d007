"""Int8 quantization: post-training (dynamic and static) and quantization-aware training with
distillation.

Implements integer-arithmetic inference as in "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference" (Jacob et al., 2018), applied to BERT as in
"Q8BERT: Quantized 8Bit BERT" (Zafrir, Boudoukh, Izsak, Wasserblat, 2019), with the symmetric
per-channel weights of "Integer Quantization for Deep Learning Inference" (Wu, Judd, Zhang,
Isaev, Micikevicius, 2020), and quantization-aware training by distillation from the float
teacher as in "TernaryBERT" (Zhang et al., 2020) and "KDLSQ-BERT" (Jin et al., 2021).

The grid (symmetric, zero point 0):

    Q(x; s) = clip(round(x / s), −127, 127),         x̂ = s · Q(x; s)

Weights: one scale per output channel, s_w[o] = max_k |W[o, k]| / 127. Activations (the input
of every linear map):

    dynamic, per token   s_x[t] = max_k |x[t, k]| / 127           (computed at run time)
    dynamic, per tensor  s_x    = max_{t,k} |x[t, k]| / 127
    static               s_x    = calibrated on sample data (max, or a percentile of the
                                  per-token maxima, which ignores rare outliers)

Int8 linear map, with the integer product accumulated exactly in int32:

    y = (Q(x; s_x) Q(W; s_w)ᵀ) ⊙ (s_x s_wᵀ) + b

Embedding tables are stored in int8 with one scale per row (optional). LayerNorm, softmax,
GELU, biases and residual sums stay in float: their inputs have wide ranges (BERT's LayerNorm
inputs have outlier dimensions) and they cost little.

Quantization-aware training (QAT) replaces every linear map by its fake-quantized twin: the
forward rounds weights and inputs to the grid as above; the backward is the straight-through
estimator (Bengio et al., 2013), ∂Q/∂x = 1 inside the clipping range, 0 outside, with the
scales held constant (min-max scales, recomputed from the weights at every step; a static
input scale follows a moving average of each batch's maximum). The student starts as the
float model and is distilled from the float teacher (soft KD on logits plus hidden-state MSE by
default, as TernaryBERT); ``fold`` then turns each fake-quantized layer into the int8 layer
with the same forward, exactly (bit for bit in float64).

Entry points: :func:`quantize` (post-training), :func:`calibrate`, :func:`prepare_qat` and the
``qat`` student of ``minidistill distill`` (``--student.kind=qat --qat.model=DIR``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.tensor import no_grad
from ..nn.layers import Embedding, Linear, LinearMap
from ..nn.module import Module
from ..nn.quantized import (ACTIVATIONS, FakeQuantEmbedding, FakeQuantLinear, Int8Embedding, Int8Linear, QMAX,
                             replace_module)
from .fold import FoldReport, clone, register_fold
from .registry import Method, register

MODES = ("dynamic", "static")


def _linear_paths(model: Module) -> list[str]:
    """Paths of the linear maps to quantize; a linear map that computes its weight (a WID
    compactor, a Theseus wrapper) must be folded first."""
    paths = []
    for path, m in model.named_modules():
        if type(m) is Linear or isinstance(m, FakeQuantLinear):
            paths.append(path)
        elif isinstance(m, LinearMap) and not isinstance(m, Int8Linear):
            raise ValueError(f"{path} is a {type(m).__name__}, which computes its weight: fold the model first "
                             "(minidistill.fold) and quantize the plain model")
    return paths


def _check_family(model: Module) -> None:
    """Int8 covers the BERT family (whose folders record their int8 layout); the BiLSTM student
    keeps its recurrent weights in float and saves no layout, so it is refused."""
    from ..models.bert import BertPreTrainedModel

    _linear_paths(model)  # a wrapper with computed weights (WID, Theseus …): "fold first" says more than the family
    if not isinstance(model, BertPreTrainedModel):
        raise ValueError(f"int8 quantization covers BERT-family models; a {type(model).__name__} is not one: fold a "
                         "compression wrapper first (minidistill.fold); a BiLSTM's recurrent layers would stay float "
                         "and its folder could not say which")


def calibrate(model: Module, batches, percentile: float | None = None) -> dict[str, float]:
    """The activation scale of every linear map's input, measured on ``batches``.

    Args:
        model: a float model (not changed).
        batches: an iterable of model-input dicts (``input_ids``, ``attention_mask`` …).
        percentile: None: the largest |x| seen (min-max); a number in (0, 100]: that
            percentile of the per-token maxima (ignores rare outlier tokens).

    Returns:
        ``{path: s_x}`` with ``s_x = max|x| / 127`` per linear map.
    """
    paths = _linear_paths(model)
    modules = dict(model.named_modules())
    seen: dict[str, list] = {p: [] for p in paths}

    def recorder(path, inner):
        def fn(x, w, b, residual=None):
            a = np.abs(x.numpy()).reshape(-1, x.shape[-1]).max(axis=1)  # (N,) per-token maxima
            seen[path].append(a.astype(np.float64))
            return inner(x, w, b, residual)
        return fn

    from ..nn import functional as F

    saved = {p: modules[p].__dict__.get("linear_fn") for p in paths}
    try:
        for p in paths:
            modules[p].linear_fn = recorder(p, saved[p] or F.linear)
        model.eval()
        n = 0
        with no_grad():
            for batch in batches:
                model(**batch)
                n += 1
        if not n:
            raise ValueError("calibrate: no batches were given")
    finally:
        for p in paths:
            if saved[p] is None:
                modules[p].__dict__.pop("linear_fn", None)
            else:
                modules[p].linear_fn = saved[p]
    if percentile is not None and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    out = {}
    for p, parts in seen.items():
        maxima = np.concatenate(parts) if parts else np.zeros(1)
        top = float(maxima.max() if percentile is None else np.percentile(maxima, percentile))
        out[p] = top / QMAX if top > 0 else 1.0
    return out


def calibration_batches(data, tokenizer, batch_size: int = 32, max_length: int = 128, limit: int = 512) -> list:
    """Model-input batches of the first ``limit`` texts of a dataset, for :func:`calibrate`."""
    from ..data.datasets import model_inputs

    sample = data.select(range(min(limit, len(data))))
    return [model_inputs(b) for b in sample.batches(tokenizer, batch_size, max_length, shuffle=False)]


def quantize(model: Module, mode: str = "dynamic", calibration=None, activations: str | None = None,
             embeddings: bool = True, percentile: float | None = None, tokenizer=None,
             max_length: int = 128) -> Module:
    """An int8 copy of ``model`` (the input is not changed).

    Every plain linear map becomes an :class:`~minidistill.nn.quantized.Int8Linear` (int8
    weights per output channel, int8 activations); embedding tables become int8 with a scale
    per row when ``embeddings``. A fake-quantized model (after quantization-aware training)
    is converted with the scales it trained with.

    Args:
        model: a float BERT-family model (fold WID / Theseus / adapters first).
        mode: ``"dynamic"`` (activation scales computed at run time) or ``"static"``
            (scales calibrated once on ``calibration``).
        calibration: ``static``: a dataset (with ``tokenizer``; its first 512 texts) or an
            iterable of model-input dicts.
        activations: ``dynamic``: ``"per_token"`` (default) or ``"per_tensor"``.
        embeddings: also store the embedding tables in int8.
        percentile: ``static``: calibrate to this percentile of per-token maxima instead of the max.
        tokenizer: the tokenizer of a ``calibration`` dataset.
        max_length: tokens per calibration sequence.

    Returns:
        The int8 model, in evaluation mode, with every parameter frozen.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_family(model)
    if mode == "static":
        if activations not in (None, "static"):
            raise ValueError(f"static quantization calibrates its activation scales; activations={activations!r} "
                             "belongs to dynamic quantization")
        if calibration is None:
            raise ValueError("static quantization needs calibration batches (calibration=...)")
        activations = "static"
    else:
        activations = activations or "per_token"
        if activations not in ACTIVATIONS or activations == "static":
            raise ValueError(f"dynamic activations must be 'per_token' or 'per_tensor', got {activations!r}")
    if mode == "static" and hasattr(calibration, "batches"):
        if tokenizer is None:
            raise ValueError("a calibration dataset needs its tokenizer (tokenizer=...)")
        calibration = calibration_batches(calibration, tokenizer, max_length=max_length)
    paths = _linear_paths(model)
    scales = calibrate(model, calibration, percentile) if mode == "static" else {}
    out = clone(model)
    modules = dict(out.named_modules())
    for p in paths:
        replace_module(out, p, Int8Linear.from_float(modules[p], activations, scales.get(p)))
    if embeddings:
        for p, m in modules.items():
            if isinstance(m, Embedding):  # plain or fake-quantized
                replace_module(out, p, Int8Embedding.from_float(m))
    out.requires_grad_(False)
    return out.eval()


def prepare_qat(model: Module, activations: str = "per_token", calibration=None, embeddings: bool = True) -> Module:
    """A copy of ``model`` with every plain linear map (and, with ``embeddings``, every
    embedding table) fake-quantized, ready to train (quantization-aware training); ``fold``
    turns it into the int8 model with the same forward.

    ``activations="static"`` starts each input scale from ``calibration`` batches when
    given (else from the first training batch) and follows the batches' maxima while training.
    """
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    _check_family(model)
    paths = _linear_paths(model)
    scales = calibrate(model, calibration) if activations == "static" and calibration is not None else {}
    out = clone(model)
    modules = dict(out.named_modules())
    for p in paths:
        if not isinstance(modules[p], FakeQuantLinear):
            replace_module(out, p, FakeQuantLinear.from_float(modules[p], activations, scales.get(p)))
    if embeddings:
        for p, m in modules.items():
            if type(m) is Embedding:
                replace_module(out, p, FakeQuantEmbedding.from_float(m))
    return out.train(model.training)


@register_fold(FakeQuantLinear)
def _fold_fake_quant(layer: FakeQuantLinear, report: FoldReport) -> Int8Linear:
    """A fake-quantized linear map → the int8 layer with the same forward (exact)."""
    return Int8Linear.from_float(layer, layer.activations)


@register_fold(FakeQuantEmbedding)
def _fold_fake_quant_embedding(layer: FakeQuantEmbedding, report: FoldReport) -> Int8Embedding:
    """A fake-quantized embedding table → the int8 table with the same lookups (exact)."""
    return Int8Embedding.from_float(layer)


# ----------------------------------------------------------------- the student
@dataclass
class QATSettings:
    """Quantization-aware training: which float model is made int8, and how."""

    model: str = ""  # folder of the float model (a KD, folded WID / Theseus or MiniALBERT student); empty: the teacher
    activations: str = "per_token"  # per_token | per_tensor | static
    embeddings: bool = True  # also store the embedding tables in int8 when folding


def _build_qat(teacher, student, settings: QATSettings, total_steps):
    from ..models import MiniAlbertConfig, load_model

    if settings.model:
        path = Path(settings.model)
        if not (path / "config.json").is_file():
            raise ValueError(f"qat.model: {path} is not a saved model folder (no config.json)")
        saved = json.loads((path / "config.json").read_text())
        model = load_model(path, backend=teacher.backend)  # any head, the teacher's task
        if saved.get("model_type") == MiniAlbertConfig.MODEL_TYPE:  # written out as a plain BERT first
            from .fold import fold

            model = fold(model, unroll=True)
        if model.config.num_labels != teacher.config.num_labels:
            raise ValueError(f"qat.model: {path} predicts {model.config.num_labels} labels, the teacher "
                             f"{teacher.config.num_labels}")
    else:
        model = clone(teacher)
    if getattr(model.config, "extra", {}).get("quantization"):
        raise ValueError("qat.model is int8 already; give the float model it was made from")
    return prepare_qat(model, settings.activations, embeddings=settings.embeddings)


register(Method("qat", "int8 quantization-aware training, distilled from the float teacher (Q8BERT, TernaryBERT)",
                settings=QATSettings, build=_build_qat, folds=True, order=90))
