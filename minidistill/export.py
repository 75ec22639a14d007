"""ONNX export of BERT-family models, float and int8, written op by op from our own modules.

The exported graph is the model's forward, spelled in ONNX operators (opset 17), with dynamic
``batch`` and ``sequence`` axes:

    embeddings   Gather(word) + Gather(token type) + Gather(position, 0 … T−1) → LayerNormalization
    attention    MatMul/Add for q, k, v → Reshape (B, T, H, d) → Transpose (B, H, T, d)
                 Softmax(q kᵀ / √d + mask) v → Transpose, Reshape (B, T, D) → MatMul/Add
                 → Add(residual) → LayerNormalization
    feed-forward MatMul/Add → GELU (0.5 x (1 + erf(x / √2))) → MatMul/Add → Add → LayerNormalization
    heads        pooler tanh(W h₀ + b) (or the masked mean) → classifier; or a classifier per token

An int8 layer (``minidistill.quantize``) is exported with the same arithmetic as ours (the
``exact`` style; ``fused`` hands the layer to ONNX Runtime's own int8 kernel instead):

    s_x = ReduceMax(|x|) / 127 (per token or per tensor; a constant when static)
    Q_x = Cast<int8>(Clip(Round(x / s_x), −127, 127))
    y   = Cast<float>(MatMulInteger(Q_x, Q_Wᵀ)) · (s_x s_w) + b

so ONNX Runtime reproduces our int8 model, not a re-quantized approximation of it. Int8
embedding tables are gathered as int8 and scaled per row.

``onnx`` (to build the file) and ``onnxruntime`` (to run and check it) are optional extras:
``pip install "minidistill[onnx]"``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import fileio
from .nn.layers import Embedding, Linear
from .nn.quantized import Int8Embedding, Int8Linear

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"ONNX export needs the optional package {module!r}: pip install \"minidistill[onnx]\"") from None


class _Graph:
    """A small builder: ``op(...)`` appends a node and returns its output's name."""

    def __init__(self, onnx, int8_style: str = "exact"):
        self.onnx, self.helper, self.int8_style = onnx, onnx.helper, int8_style
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array, hint: str = "c") -> str:
        """An initializer holding ``array`` (NumPy) → its name."""
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, kind: str, *inputs, hint: str | None = None, **attrs) -> str:
        out = self.name(hint or kind.lower())
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attrs))
        return out


def _np(t, dtype=None) -> np.ndarray:
    a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    return a.astype(dtype) if dtype is not None else a


def _linear(g: _Graph, x: str, layer, dtype) -> str:
    """``x`` (..., in) through a Linear or Int8Linear layer → (..., out)."""
    if isinstance(layer, Int8Linear):
        return _int8_linear(g, x, layer, dtype)
    if not isinstance(layer, Linear):
        raise ValueError(f"cannot export a {type(layer).__name__}: fold the model first (minidistill.fold)")
    y = g.op("MatMul", x, g.const(_np(layer.weight, dtype).T, "w"))
    return g.op("Add", y, g.const(_np(layer.bias, dtype), "b")) if layer.bias is not None else y


#: how int8 layers are written (see :func:`to_onnx`)
INT8_STYLES = ("exact", "fused")


def _int8_linear(g: _Graph, x: str, layer: Int8Linear, dtype) -> str:
    qw = _np(layer.weight).T.astype(np.int8)  # (in, out)
    if g.int8_style == "fused":  # ONNX Runtime's kernel: it quantizes x itself (per tensor, uint8 with a zero point)
        bias = [g.const(_np(layer.bias, np.float32), "b")] if layer.bias is not None else []
        # weights as uint8 with zero point 128: its u8s8 kernels on AVX2 machines without VNNI
        # saturate 16-bit pair sums (measured: 4× the error of our per-tensor model on a toy BERT)
        qw8 = (qw.astype(np.int16) + 128).astype(np.uint8)
        return g.op("DynamicQuantizeMatMul", x, g.const(qw8, "qw"), g.const(_np(layer.weight_scale, np.float32), "s_w"),
                    g.const(np.array(128, np.uint8)), *bias, domain="com.microsoft")
    if layer.activations == "static":
        s_x = g.const(_np(layer.input_scale, dtype).reshape(()), "s_x")
    else:
        absx = g.op("Abs", x)
        if layer.activations == "per_token":
            amax = g.op("ReduceMax", absx, axes=[-1], keepdims=1)  # (B, T, 1)
        else:
            amax = g.op("ReduceMax", absx, keepdims=1)  # (1, 1, 1)
        zero, one = g.const(np.array(0.0, dtype)), g.const(np.array(1.0, dtype))
        s_x = g.op("Where", g.op("Greater", amax, zero), g.op("Div", amax, g.const(np.array(127.0, dtype))), one)
    q = g.op("Round", g.op("Div", x, s_x))
    q = g.op("Clip", q, g.const(np.array(-127.0, dtype)), g.const(np.array(127.0, dtype)))
    # uint8 operands with zero point 128: ONNX Runtime's u8u8 kernels widen to 16 bits and are
    # exact; its u8s8 kernels on AVX2 machines without VNNI may saturate 16-bit pair sums
    q = g.op("Cast", g.op("Add", q, g.const(np.array(128.0, dtype))), to=g.onnx.TensorProto.UINT8)
    zero_point = g.const(np.array(128, np.uint8))
    acc = g.op("MatMulInteger", q, g.const((qw.astype(np.int16) + 128).astype(np.uint8), "qw"),
               zero_point, zero_point)  # (B, T, out) int32
    scale = g.op("Mul", s_x, g.const(_np(layer.weight_scale, dtype), "s_w"))
    y = g.op("Mul", g.op("Cast", acc, to=_onnx_float(g, dtype)), scale)
    return g.op("Add", y, g.const(_np(layer.bias, dtype), "b")) if layer.bias is not None else y


def _onnx_float(g: _Graph, dtype) -> int:
    return g.onnx.TensorProto.DOUBLE if np.dtype(dtype) == np.float64 else g.onnx.TensorProto.FLOAT


def _gather(g: _Graph, table, ids: str, dtype) -> str:
    """Rows of an Embedding / Int8Embedding at ``ids``."""
    if isinstance(table, Int8Embedding):
        rows = g.op("Cast", g.op("Gather", g.const(_np(table.weight).astype(np.int8), "emb"), ids),
                    to=_onnx_float(g, dtype))
        scale = g.op("Unsqueeze", g.op("Gather", g.const(_np(table.weight_scale, dtype), "emb_s"), ids),
                     g.const(np.array([-1], np.int64)))
        return g.op("Mul", rows, scale)
    if not isinstance(table, Embedding):
        raise ValueError(f"cannot export a {type(table).__name__} embedding table")
    return g.op("Gather", g.const(_np(table.weight, dtype), "emb"), ids)


def _layer_norm(g: _Graph, x: str, ln, dtype) -> str:
    return g.op("LayerNormalization", x, g.const(_np(ln.weight, dtype)), g.const(_np(ln.bias, dtype)),
                axis=-1, epsilon=float(ln.eps))


def _gelu(g: _Graph, x: str, act: str, dtype) -> str:
    c = lambda v: g.const(np.array(v, dtype))  # noqa: E731
    if act == "relu":
        return g.op("Relu", x)
    if act == "gelu":
        inner = g.op("Erf", g.op("Mul", x, c(1.0 / math.sqrt(2.0))))
        return g.op("Mul", g.op("Mul", x, c(0.5)), g.op("Add", inner, c(1.0)))
    if act in ("gelu_new", "gelu_pytorch_tanh"):
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Mul", g.op("Add", x, g.op("Mul", cube, c(0.044715))), c(math.sqrt(2.0 / math.pi)))
        return g.op("Mul", g.op("Mul", x, c(0.5)), g.op("Add", g.op("Tanh", inner), c(1.0)))
    raise ValueError(f"cannot export hidden_act {act!r}")


def _encoder(g: _Graph, bert, config, dtype) -> tuple[str, str, str]:
    """The graph of a ``BertModel``: returns (last hidden state, additive mask, float mask)."""
    emb = bert.embeddings
    ids, mask, types = INPUTS
    positions = g.op("Sub", g.op("CumSum", g.op("ConstantOfShape", g.op("Shape", ids),
                                                value=g.helper.make_tensor("one", g.onnx.TensorProto.INT64, [1], [1])),
                                  g.const(np.array(1, np.int64))), g.const(np.array(1, np.int64)))  # (B, T): 0 … T−1
    x = g.op("Add", _gather(g, emb.word_embeddings, ids, dtype), _gather(g, emb.token_type_embeddings, types, dtype))
    x = g.op("Add", x, _gather(g, emb.position_embeddings, positions, dtype))  # (B, T, D)
    x = _layer_norm(g, x, emb.LayerNorm, dtype)
    fmask = g.op("Cast", mask, to=_onnx_float(g, dtype))  # (B, T)
    neg = g.op("Mul", g.op("Sub", g.const(np.array(1.0, dtype)), fmask), g.const(np.array(np.finfo(dtype).min, dtype)))
    add_mask = g.op("Unsqueeze", neg, g.const(np.array([1, 2], np.int64)))  # (B, 1, 1, T)
    heads, width = config.num_attention_heads, config.hidden_size
    d = width // heads
    split = g.const(np.array([0, 0, heads, d], np.int64))
    merge = g.const(np.array([0, 0, width], np.int64))
    for layer in bert.encoder.layer:
        att = layer.attention
        q = g.op("Transpose", g.op("Reshape", _linear(g, x, att.self.query, dtype), split), perm=[0, 2, 1, 3])
        k = g.op("Transpose", g.op("Reshape", _linear(g, x, att.self.key, dtype), split), perm=[0, 2, 3, 1])
        v = g.op("Transpose", g.op("Reshape", _linear(g, x, att.self.value, dtype), split), perm=[0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), g.const(np.array(1.0 / math.sqrt(d), dtype))), add_mask)
        ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # (B, H, T, d)
        ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), merge)  # (B, T, D)
        if getattr(att.output, "adapter", None) is not None or getattr(layer.output, "adapter", None) is not None:
            raise ValueError("cannot export a model with adapters: fold them first (minidistill.fold)")
        x = _layer_norm(g, g.op("Add", _linear(g, ctx, att.output.dense, dtype), x), att.output.LayerNorm, dtype)
        h = _gelu(g, _linear(g, x, layer.intermediate.dense, dtype), config.hidden_act, dtype)
        x = _layer_norm(g, g.op("Add", _linear(g, h, layer.output.dense, dtype), x), layer.output.LayerNorm, dtype)
    return x, add_mask, fmask


def _pooled(g: _Graph, bert, x: str, fmask: str, config, dtype) -> str:
    if bert.pooler is None:
        raise ValueError("the model has no pooler to export")
    if config.classifier_pooling == "mean":
        m = g.op("Unsqueeze", fmask, g.const(np.array([-1], np.int64)))  # (B, T, 1)
        total = g.op("ReduceSum", g.op("Mul", x, m), g.const(np.array([1], np.int64)), keepdims=0)  # (B, D)
        count = g.op("ReduceSum", m, g.const(np.array([1], np.int64)), keepdims=0)  # (B, 1)
        summary = g.op("Div", total, g.op("Max", count, g.const(np.array(1.0, dtype))))
    else:
        first = g.op("Slice", x, g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64)),
                     g.const(np.array([1], np.int64)))  # (B, 1, D)
        summary = g.op("Squeeze", first, g.const(np.array([1], np.int64)))  # (B, D)
    return g.op("Tanh", _linear(g, summary, bert.pooler.dense, dtype))


def to_onnx(model, path, dtype: str = "float32", int8_style: str = "exact") -> Path:
    """Write ``model`` (``BertModel``, ``BertForSequenceClassification``,
    ``BertForTokenClassification`` or ``BertForQuestionAnswering``, float or int8) as an ONNX
    file at ``path`` (atomically).

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, (batch, sequence));
    outputs ``logits`` ((batch, labels) or (batch, sequence, labels)), ``start_logits`` and
    ``end_logits`` ((batch, sequence), transformers' names) for QA, or ``last_hidden_state``
    and ``pooler_output`` for a bare encoder.

    ``int8_style`` says how int8 linear maps are written: ``"exact"``: our arithmetic in
    standard operators (any ONNX runtime; ONNX Runtime reproduces our int8 model); ``"fused"``:
    ONNX Runtime's ``DynamicQuantizeMatMul`` with our int8 weights, which quantizes each
    activation tensor itself (asymmetric uint8, one scale per tensor) inside its fast kernel:
    faster, a slightly different model (measured in ``benchmarks/quantization.py``).
    """
    onnx = _require("onnx")
    from .models import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification, BertModel

    if int8_style not in INT8_STYLES:
        raise ValueError(f"int8_style must be one of {INT8_STYLES}, got {int8_style!r}")
    dtype = np.dtype(dtype)
    if int8_style == "fused" and dtype != np.float32:
        raise ValueError("the fused int8 style runs in float32 only")
    g = _Graph(onnx, int8_style)
    config = model.config
    ft = onnx.TensorProto.DOUBLE if dtype == np.float64 else onnx.TensorProto.FLOAT
    if isinstance(model, BertModel):
        x, _, fmask = _encoder(g, model, config, dtype)
        outs = [("last_hidden_state", x, ["batch", "sequence", config.hidden_size])]
        if model.pooler is not None:
            outs.append(("pooler_output", _pooled(g, model, x, fmask, config, dtype), ["batch", config.hidden_size]))
    elif isinstance(model, BertForSequenceClassification):
        x, _, fmask = _encoder(g, model.bert, config, dtype)
        logits = _linear(g, _pooled(g, model.bert, x, fmask, config, dtype), model.classifier, dtype)
        outs = [("logits", logits, ["batch", config.num_labels])]
    elif isinstance(model, BertForTokenClassification):
        x, _, _ = _encoder(g, model.bert, config, dtype)
        outs = [("logits", _linear(g, x, model.classifier, dtype), ["batch", "sequence", config.num_labels])]
    elif isinstance(model, BertForQuestionAnswering):
        x, _, _ = _encoder(g, model.bert, config, dtype)
        both = _linear(g, x, model.qa_outputs, dtype)  # (B, T, 2)
        outs = []
        for k, name in enumerate(("start_logits", "end_logits")):
            part = g.op("Slice", both, g.const(np.array([k], np.int64)), g.const(np.array([k + 1], np.int64)),
                        g.const(np.array([2], np.int64)))  # (B, T, 1)
            outs.append((name, g.op("Squeeze", part, g.const(np.array([2], np.int64))), ["batch", "sequence"]))
    else:
        raise ValueError(f"cannot export a {type(model).__name__}: ONNX export covers BertModel and the BERT task "
                         "heads (fold WID, Theseus and MiniALBERT students into plain BERT first)")
    outputs = []
    for name, node, shape in outs:
        g.nodes.append(g.helper.make_node("Identity", [node], [name]))
        outputs.append(g.helper.make_tensor_value_info(name, ft, shape))
    inputs = [g.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, ["batch", "sequence"]) for n in INPUTS]
    graph = g.helper.make_graph(g.nodes, type(model).__name__, inputs, outputs, g.inits)
    proto = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", OPSET),
                                                      g.helper.make_opsetid("com.microsoft", 1)],
                                producer_name="minidistill")
    proto.ir_version = min(proto.ir_version, 9)  # what current ONNX Runtime releases read
    onnx.checker.check_model(proto)
    path = Path(path)
    with fileio.atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return path


#: ONNX Runtime graph rewrites left out: MatMulIntegerToFloat fusion rewrites an exact int8
#: layer into its own kernel, which changes the results (logits off by 2 on MiniLM-L6) and
#: was no faster (measured in benchmarks/quantization.py)
DISABLED_OPTIMIZERS = ["MatMulIntegerToFloatFusion"]


def session(path, threads: int | None = None):
    """An ONNX Runtime inference session for the file at ``path`` (CPU, all graph
    optimisations but :data:`DISABLED_OPTIMIZERS`)."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only (ONNX Runtime warns about shape merges it handles)
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=DISABLED_OPTIMIZERS)


def run(sess, batch: dict) -> dict:
    """Run an ONNX Runtime session on a batch of model inputs; returns ``{output: array}``."""
    ids = np.asarray(batch["input_ids"], np.int64)
    feed = {"input_ids": ids,
            "attention_mask": np.asarray(batch.get("attention_mask", np.ones_like(ids)), np.int64),
            "token_type_ids": np.asarray(batch.get("token_type_ids", np.zeros_like(ids)), np.int64)}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))


def export(model_dir, out_dir, int8: bool = False, int8_style: str = "exact", calibration=None) -> Path:
    """Export the saved model in ``model_dir`` to ``out_dir/model.onnx`` with its config and
    tokenizer files; ``int8`` quantizes a float model first (dynamic, per token; static with
    ``calibration`` batches) — a model saved in int8 is exported as it is, in ``int8_style``
    (see :func:`to_onnx`). Returns the ONNX file's path."""
    import shutil

    from .models import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification, BertModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    cfg = fileio.read_config(model_dir)
    arch = (cfg.get("architectures") or ["BertModel"])[0]
    classes = {c.__name__: c for c in (BertModel, BertForSequenceClassification, BertForTokenClassification,
                                       BertForQuestionAnswering)}
    if arch not in classes:
        raise ValueError(f"{model_dir}: cannot export a {arch}; ONNX export covers {', '.join(classes)}")
    model = classes[arch].from_pretrained(model_dir, backend="numpy")
    if int8 and "quantization" not in cfg:
        from .compress.quantize import quantize

        model = quantize(model, "static" if calibration is not None else "dynamic", calibration=calibration)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = to_onnx(model, out_dir / "model.onnx", int8_style=int8_style)
    fileio.write_json(out_dir / "export.json", {"source": str(model_dir.resolve()), "int8": bool(int8 or "quantization" in cfg),
                                                "int8_style": int8_style, "opset": OPSET})
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json",
                 "metrics.json"):
        if (model_dir / name).is_file():
            with fileio.atomic_path(out_dir / name) as tmp:
                shutil.copyfile(model_dir / name, tmp)
    return path


class OnnxModel:
    """An exported classifier run by ONNX Runtime behind the calls a minidistill model answers
    (``model(**batch).logits``, ``eval()``, ``config``, ``num_parameters()``), so that
    ``evaluate``, ``predict`` and the compression report take it like any other model."""

    def __init__(self, folder, threads: int | None = None):
        from .models import BertConfig

        folder = Path(folder)
        if not (folder / "model.onnx").is_file():
            raise FileNotFoundError(f"{folder} has no model.onnx (export one with minidistill export)")
        self.folder = folder
        self.config = BertConfig.from_dict(fileio.read_config(folder))
        self.session = session(folder / "model.onnx", threads)
        self.training = False

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        from .core.tensor import Tensor
        from .models.bert import ModelOutput

        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = run(self.session, {k: v for k, v in batch.items() if v is not None})
        if "start_logits" in out:  # a QA model: start and end, and both as (B, T, 2) logits
            both = np.stack([out["start_logits"], out["end_logits"]], axis=-1)
            return ModelOutput(logits=Tensor(both, backend="numpy"), start_logits=Tensor(out["start_logits"], backend="numpy"),
                               end_logits=Tensor(out["end_logits"], backend="numpy"))
        return ModelOutput(logits=Tensor(out["logits"], backend="numpy"))

    def eval(self) -> "OnnxModel":
        """Nothing to switch: an exported graph has no dropout."""
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        """An exported graph does not train."""
        if mode:
            raise RuntimeError("an ONNX model cannot be trained; train the minidistill model it was exported from")
        return self

    def modules(self):
        """No minidistill modules: the graph holds the model."""
        return iter(())

    def parameters(self):
        """No trainable parameters."""
        return iter(())

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True):
        """No trainable parameters."""
        return iter(())

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Elements of the graph's weights (int8 ones included)."""
        onnx = _require("onnx")
        proto = onnx.load(str(self.folder / "model.onnx"))
        return 0 if trainable_only else int(sum(np.prod(t.dims) for t in proto.graph.initializer if len(t.dims) >= 1))

    def stats(self, max_length: int) -> dict:
        """Parameters and FLOPs of the architecture the graph was exported from."""
        from .models import BertForSequenceClassification
        from .models.stats import model_stats

        return model_stats(BertForSequenceClassification(self.config), max_length)
