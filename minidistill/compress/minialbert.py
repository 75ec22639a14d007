"""MiniALBERT: distilling a BERT into a recursive student (one shared layer, run L times).

Nouriborji, Rohanian, Kouchaki, Clifton: "MiniALBERT: Model Distillation via
Parameter-Efficient Recursive Transformers" (EACL 2023). The architecture is in
``models/minialbert.py``; this module makes the student from a teacher, gives the original
recipe's objectives, and unrolls a trained student into a plain BERT.

Student initialisation (ours; the original starts from a recursive model pre-trained for
the purpose): the E-wide embedding tables are the teacher's projected onto the top E
principal directions of its word table, with the projection and mean as ``P`` and ``b``::

    V = top-E right singular vectors of (W_word − mean),  w_E = (w − mean) V,
    p_E = p V,  t_E = t V,  P = V,  b = mean   ⇒   (w_E + p_E + t_E) Pᵀ + b ≈ w + p + t

and the shared layer is a copy of one teacher layer (``shared_init``). Adapters start as
identities, pooler and classifier are the teacher's. A masked-LM teacher gives a masked-LM
student with ALBERT's decoder path (``MiniAlbertForMaskedLM``: transform H → E, LayerNorm over
E, decoder tied to the E-wide table): its transform starts as the teacher's projected onto the
same directions, ``W_t' = Vᵀ W_t``, ``b_t' = Vᵀ b_t`` (LayerNorm fresh), and the vocabulary bias
is the teacher's.

The original distillation loss (T = 1, student layer l ↔ teacher layer 2l + 1)::

    L = 1 · MLM + 3 · (Σ_l KL(A_t ‖ A_s) + Σ_l (1 − cos(h_s, h_t))) + 5 · T² KL(p_t ‖ p_s)

:func:`minialbert_objectives` builds the task-specific part (no MLM) on our objectives, with
the ``"layers"`` map: layer outputs only, l ↔ 2l + 1 for a teacher twice as deep (l ↔ l for
one as deep), and no embedding pair, as the original (an earlier version of ours also paired
the embeddings, (0, 0)). Our attention KL is a batch mean over rows (``kd.py``); the original averages over
every element.

``fold(model, unroll=True)`` writes the L repeats out as L layers of the BERT task model with
the same head (with per-layer adapters when the student has them): the same function, exactly.
Students have the teacher's head, so tagging and QA teachers give tagging and QA students.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import use_backend
from ..models.bert import BERT_TASK_MODELS, BertTaskModel, head_kind
from ..models.config import BertConfig
from ..models.minialbert import MINIALBERT_TASK_MODELS, MiniAlbertConfig, MiniAlbertTaskModel, embedding_tables_from
from ..nn import init as nn_init
from ..nn.adapters import add_adapters
from . import kd
from .fold import register_fold
from .registry import DemoStep, Method, register


def make_minialbert(teacher, embedding_size: int = 128, num_repeats: int | None = None,
                    adapter_reduction: int = 16, adapter_kind: str = "dense", shared_init="middle",
                    adapter_layer_norm: bool = False, seed: int = 0) -> MiniAlbertTaskModel:
    """A MiniALBERT student with the teacher's head (sentence, token or QA), initialised from
    the teacher.

    Args:
        teacher: the teacher (its width, heads and FFN are kept).
        embedding_size: E.
        num_repeats: L (default: the teacher's depth).
        adapter_reduction: per-repeat adapters' reduction (0: none).
        adapter_kind: "dense" or "phm".
        shared_init: the teacher layer copied into the shared layer: an index, "middle"
            (layer L_t // 2, the default), "first", "last", or "random" (fresh weights).
        adapter_layer_norm: the original's LayerNorm inside each adapter.
        seed: for the fresh weights (adapters, a random shared layer).
    """
    kind = head_kind(teacher) if isinstance(teacher, BertTaskModel) else None
    if kind is None:
        raise TypeError("make_minialbert needs a BERT task model teacher (sentence, token, QA or masked-LM head), got "
                        f"{type(teacher).__name__}")
    ct = teacher.config
    if embedding_size > ct.hidden_size:
        raise ValueError(f"embedding_size {embedding_size} is wider than the teacher's hidden size {ct.hidden_size}")
    names = {"first": 0, "middle": ct.num_hidden_layers // 2, "last": ct.num_hidden_layers - 1}
    layer = names.get(shared_init, shared_init)
    if layer != "random" and not (isinstance(layer, int) and 0 <= layer < ct.num_hidden_layers):
        raise ValueError(f"shared_init must be a teacher layer 0..{ct.num_hidden_layers - 1}, "
                         f"{', '.join(names)} or 'random'; got {shared_init!r}")
    fields = {k: v for k, v in ct.to_dict().items() if k in MiniAlbertConfig.__dataclass_fields__}
    fields.update(num_hidden_layers=num_repeats or ct.num_hidden_layers, embedding_size=embedding_size,
                  adapter_reduction=adapter_reduction, adapter_kind=adapter_kind,
                  adapter_layer_norm=adapter_layer_norm)
    cfg = MiniAlbertConfig(**fields)
    nn_init.manual_seed(seed)
    with use_backend(teacher.backend):
        student = MINIALBERT_TASK_MODELS[kind](cfg)  # the teacher's head
    student.to(dtype=next(teacher.parameters()).dtype.name)
    t = {k: teacher.backend.to_numpy(v) for k, v in teacher.state_dict().items()}
    emb = "bert.embeddings."
    w, p, tt, proj, mean = embedding_tables_from(t[emb + "word_embeddings.weight"], t[emb + "position_embeddings.weight"],
                                                 t[emb + "token_type_embeddings.weight"], embedding_size)
    state = {"embeddings.word_embeddings.weight": w, "embeddings.position_embeddings.weight": p,
             "embeddings.token_type_embeddings.weight": tt, "embeddings.projection.weight": proj,
             "embeddings.projection.bias": mean,
             "embeddings.LayerNorm.weight": t[emb + "LayerNorm.weight"], "embeddings.LayerNorm.bias": t[emb + "LayerNorm.bias"]}
    if layer != "random":
        src = f"bert.encoder.layer.{layer}."
        state.update({"encoder.shared_layer." + k[len(src):]: v for k, v in t.items() if k.startswith(src)})
    if student.pooler is not None:
        for k in ("pooler.dense.weight", "pooler.dense.bias"):
            state[k] = t["bert." + k]
    if kind == "mlm":  # ALBERT's decoder path: the transform maps H → E, the decoder is the E-wide table
        head = "cls.predictions."
        state[head + "bias"] = t[head + "bias"]
        state[head + "transform.dense.weight"] = proj.T @ t[head + "transform.dense.weight"]  # (E, H)
        state[head + "transform.dense.bias"] = proj.T @ t[head + "transform.dense.bias"]  # (E,)
    else:
        state.update({k: t[k] for k in teacher.head_parameter_names()})
    student.load_state_dict({k: np.asarray(v) for k, v in state.items()}, strict=False)
    student.train(teacher.training)
    student.shared_init = layer
    return student


def minialbert_objectives(student, teacher, temperature: float = 1.0, logit_weight: float = 5.0,
                          layer_weight: float = 3.0, layer_map="layers") -> list:
    """The original recipe without MLM: ``5 · soft KD (T = 1) + 3 · (attention KL + hidden
    cosine)`` on a layer map: ``"layers"`` by default, the original's student layer l ↔ teacher
    layer 2l + 1 for a teacher twice as deep, with no pair for the embeddings."""
    ls, lt = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    hmap = kd.LayerMap.build(layer_map, ls, lt, "hidden")
    amap = kd.LayerMap.build(layer_map, ls, lt, "attention")
    return [kd.SoftKD(logit_weight, temperature),
            kd.AttentionKL(amap, layer_weight),
            kd.HiddenCosine(hmap, student.config.hidden_size, teacher.config.hidden_size, layer_weight)]


def unrolled_config(cfg: MiniAlbertConfig):
    """The BERT config of an unrolled MiniALBERT, and its adapter config (or None)."""
    fields = {k: v for k, v in cfg.to_dict().items() if k in BertConfig.__dataclass_fields__}
    return BertConfig(**fields), cfg.adapter_config()


@register_fold(MiniAlbertTaskModel)
def _fold_minialbert(model: MiniAlbertTaskModel, report):
    """With ``unroll=True``: the equivalent BERT task model of the same head (L layers, each a
    copy of the shared one, with that repeat's adapters); otherwise the model itself (its PHM
    adapters, if any, still fold into dense ones)."""
    if not report.options.get("unroll"):
        return model
    if model.kind == "mlm":
        raise ValueError("a MiniALBERT masked-LM model does not unroll into a BertForMaskedLM: its decoder reads "
                         "E-wide features normalised over E, which no H-wide BERT head reproduces exactly; "
                         "fine-tune it on a task first (its encoder loads into any MiniALBERT head), then unroll")
    cfg, acfg = unrolled_config(model.config)
    ops = model.backend
    arr = {k: ops.to_numpy(v) for k, v in model.state_dict().items()}
    emb = "embeddings."
    pw, pb = arr[emb + "projection.weight"], arr[emb + "projection.bias"]  # (H, E), (H,)
    state = {"bert.embeddings.word_embeddings.weight": arr[emb + "word_embeddings.weight"] @ pw.T,
             "bert.embeddings.position_embeddings.weight": arr[emb + "position_embeddings.weight"] @ pw.T,
             # every token has exactly one type: the projection's bias rides on the type table
             "bert.embeddings.token_type_embeddings.weight": arr[emb + "token_type_embeddings.weight"] @ pw.T + pb,
             "bert.embeddings.LayerNorm.weight": arr[emb + "LayerNorm.weight"],
             "bert.embeddings.LayerNorm.bias": arr[emb + "LayerNorm.bias"]}
    shared = "encoder.shared_layer."
    for r in range(cfg.num_hidden_layers):
        layer = f"bert.encoder.layer.{r}."
        state.update({layer + k[len(shared):]: v for k, v in arr.items() if k.startswith(shared)})
        if acfg is not None:
            for site, dst in (("attention", "attention.output.adapter."), ("ffn", "output.adapter.")):
                src = f"encoder.adapters.{r}.{site}."
                state.update({layer + dst + k[len(src):]: v for k, v in arr.items() if k.startswith(src)})
    if model.pooler is not None:
        for k in ("pooler.dense.weight", "pooler.dense.bias"):
            state["bert." + k] = arr[k]
    state.update({k: arr[k] for k in model.head_parameter_names()})
    with use_backend(ops):
        out = BERT_TASK_MODELS[model.kind](cfg)
        if acfg is not None:
            add_adapters(out, acfg)  # both sites: MiniALBERT's adapter config is Houlsby placement
    out.to(dtype=next(model.parameters()).dtype.name)
    out.load_state_dict(state)
    out.train(model.training)
    return out


# ------------------------------------------------------------------- registry
@dataclass
class MiniAlbertSettings:
    """The MiniALBERT student's shape and adapters."""

    embedding_size: int = 128  # E, the factorised embeddings' width
    repeats: int | None = None  # runs of the shared layer (default: the teacher's depth)
    adapter_reduction: int = 16  # per-repeat bottleneck adapters (0: none)
    adapter_kind: str = "dense"  # dense | phm
    shared_init: str = "middle"  # the teacher layer the shared layer copies: an id, first | middle | last | random


def _build(teacher, student, settings: MiniAlbertSettings, total_steps):
    init = int(settings.shared_init) if str(settings.shared_init).isdigit() else settings.shared_init
    return make_minialbert(teacher, settings.embedding_size, settings.repeats, settings.adapter_reduction,
                           settings.adapter_kind, init, seed=student.seed)


def _demo(ctx):
    if ctx.preset == "quick":  # a shared layer trained from one teacher layer needs more than the quick tour
        return []
    return [DemoStep("minialbert", "MiniALBERT E 128, 6 repeats", "distill",
                     {"student": {"kind": "minialbert"}, "minialbert": {"embedding_size": 128},
                      "objectives": {"soft_kd": 5.0, "temperature": 1.0, "attention_kl": 3.0, "hidden_cosine": 3.0,
                                     "hidden_map": "layers"}})]


register(Method("minialbert", "MiniALBERT: one shared layer run repeatedly, factorised embeddings, adapters",
                settings=MiniAlbertSettings, build=_build, demo=_demo, order=50))
