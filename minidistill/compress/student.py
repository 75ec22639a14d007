"""Student creation from a teacher: layer selection (DistilBERT-style) or a narrower student.

"How to Distill your BERT" (Wang et al., 2023) compares initialising a student from the
teacher's lower layers (0, 1, …) with its upper ones, and finds lower-layer initialisation
helps vanilla KD and hidden-state transfer. DistilBERT (Sanh et al., 2019) copies every
other layer. XtremeDistil (Mukherjee & Awadallah, 2020) builds narrower students whose word
embeddings are the teacher's reduced by PCA to the student width:

    E_s = (E_t − μ) V_k        V_k: the top-k right singular vectors of (E_t − μ)

The same projection is applied to the position and token-type embeddings so the three
stay in one space.
"""

from __future__ import annotations

import numpy as np

from ..backends import use_backend
from ..nn import init as nn_init
from ..nn.init import pca_projection
from .registry import DemoStep, Method, register

INITS = ("lower", "upper", "uniform", "random")


def choose_layers(init, n_teacher: int, num_layers: int) -> list[int] | None:
    """Teacher layer indices a student of ``num_layers`` layers copies (None: random init)."""
    if isinstance(init, (list, tuple)):
        layers = [int(i) for i in init]
        if len(layers) != num_layers:
            raise ValueError(f"init lists {len(layers)} teacher layers for a {num_layers}-layer student")
        bad = [i for i in layers if not 0 <= i < n_teacher]
        if bad:
            raise ValueError(f"init layers {bad} do not exist: the teacher has layers 0..{n_teacher - 1}")
        return layers
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {INITS} or a list of teacher layer indices")
    if num_layers > n_teacher and init != "random":
        raise ValueError(f"a {num_layers}-layer student cannot copy layers from a {n_teacher}-layer teacher")
    if init == "random":
        return None
    if init == "lower":
        return list(range(num_layers))
    if init == "upper":
        return list(range(n_teacher - num_layers, n_teacher))
    step = n_teacher / num_layers  # uniform: spread over the depth, ending at the top layer
    return [int(round((i + 1) * step)) - 1 for i in range(num_layers)]


def make_student(teacher, num_layers: int, hidden_size: int | None = None, init="lower",
                 num_attention_heads: int | None = None, intermediate_size: int | None = None, seed: int = 0):
    """A smaller model of the teacher's class, initialised from it.

    Args:
        teacher: a ``BertModel`` or a BERT task model (sentence, token or QA head; the student has the same).
        num_layers: student depth.
        hidden_size: student width (default: the teacher's). A narrower student gets fresh
            layers and PCA-reduced embeddings; heads and FFN default to the teacher's ratios.
        init: ``"lower"``, ``"upper"``, ``"uniform"``, ``"random"`` or a list of teacher
            layer indices (same width only).

    Returns:
        The student, on the teacher's backend, with ``student.init_layers`` recording the
        copied teacher layers (None when fresh).
    """
    cfg_t = teacher.config
    width = hidden_size or cfg_t.hidden_size
    narrower = width != cfg_t.hidden_size
    if narrower and init not in ("random", "lower", "upper", "uniform"):
        raise ValueError("a narrower student gets fresh layers: init must be 'random' (or a name), not a layer list")
    heads = num_attention_heads or max(1, round(cfg_t.num_attention_heads * width / cfg_t.hidden_size))
    ffn = intermediate_size or int(cfg_t.intermediate_size * width / cfg_t.hidden_size)
    cfg_s = cfg_t.replace(num_hidden_layers=num_layers, hidden_size=width, num_attention_heads=heads,
                          intermediate_size=ffn, extra=dict(cfg_t.extra))
    layers = None if narrower else choose_layers(init, cfg_t.num_hidden_layers, num_layers)
    nn_init.manual_seed(seed)
    with use_backend(teacher.backend):
        student = type(teacher)(cfg_s)
    student.to(dtype=next(teacher.parameters()).dtype.name)
    t_state = {k: teacher.backend.to_numpy(v) for k, v in teacher.state_dict().items()}
    prefix = "bert." if hasattr(teacher, "bert") else ""  # a task model (any head) or the bare encoder
    new = {}
    if not narrower:
        for k, v in t_state.items():
            rest = k[len(prefix):] if k.startswith(prefix) else None
            if rest is not None and rest.startswith("encoder.layer."):
                continue
            new[k] = v  # embeddings, pooler, task head
        for s_idx, t_idx in enumerate(layers or []):
            src = f"{prefix}encoder.layer.{t_idx}."
            dst = f"{prefix}encoder.layer.{s_idx}."
            for k, v in t_state.items():
                if k.startswith(src):
                    new[dst + k[len(src):]] = v
        if layers is None:  # random layers: keep the fresh ones
            new = {k: v for k, v in new.items() if "encoder.layer." not in k}
    else:
        emb = f"{prefix}embeddings."
        mean, v = pca_projection(t_state[emb + "word_embeddings.weight"], width)
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            new[f"{emb}{name}.weight"] = ((t_state[f"{emb}{name}.weight"] - mean) @ v).astype(np.float32)
    student.load_state_dict(new, strict=False)
    student.train(teacher.training)  # same mode as the teacher (a loaded teacher is in eval mode)
    student.init_layers = layers
    return student


# ------------------------------------------------------------------- registry
def layer_spec(spec: str):
    """A config's layer choice: ``"lower"`` (a name) or ``"0,3"`` (teacher layer indices)."""
    spec = str(spec).strip()
    return [int(x) for x in spec.split(",")] if spec[:1].isdigit() else spec


def _build(teacher, student, settings, total_steps):
    return make_student(teacher, student.num_layers, student.hidden_size, init=layer_spec(student.init),
                        seed=student.seed, num_attention_heads=student.num_attention_heads,
                        intermediate_size=student.intermediate_size)


def _demo(ctx):
    if ctx.preset == "quick":  # the cheapest recipe that learns in 100 steps: cached logits, no attention maps
        return [DemoStep("kd-2l", "2-layer KD + label cross-entropy", "distill",
                         {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                          "objectives": {"soft_kd": 1.0, "temperature": 2.0, "task": 1.0}}, cache=True)]
    return [DemoStep("kd-attention-2l", "2-layer KD + attention KL", "distill",
                     {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                      "objectives": {"soft_kd": 1.0, "temperature": 2.0, "attention_kl": 1.0}})]


register(Method("transformer", "a smaller BERT initialised from teacher layers (How to Distill your BERT)",
                build=_build, recipes=("single", "xtremedistil", "xtremedistil-hard", "xtremedistil-soft"),
                demo=_demo, order=10))
