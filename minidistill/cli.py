"""The ``minidistill`` command line: a thin layer over the public API.

    minidistill demo [--quick | --full] [--backend numba]
    minidistill finetune [--config run.toml] [--train.lr=3e-5 --data.task=sst2 ...]
    minidistill distill --teacher.path=runs/teacher [--student.num_layers=2 --objectives.attention_kl=1 ...]
    minidistill evaluate MODEL_DIR [--split dev] [--data.task=...]
    minidistill predict MODEL_DIR --text "a gripping film" [--text ...] [--context PASSAGE (QA)]
    minidistill info MODEL_DIR
    minidistill quantize MODEL_DIR OUT_DIR [--mode dynamic|static]
    minidistill export MODEL_DIR OUT_DIR [--int8] [--int8-style exact|fused]
    minidistill report runs/demo [--plot report.svg]
    minidistill mlm-head minilm-l6 --corpus texts/ --held-out held.txt [--steps 500]
    minidistill mlm-head minilm-l6 --corpus debian-docs          (a named corpus; its valid split held out)

Configs are dataclasses (:class:`FinetuneConfig`, :class:`DistillConfig`); a TOML file and ``--section.key=value``
overrides fill them, and unknown keys or mistyped values are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import course
from .config_io import ConfigError, help_markdown, help_text, load_config, to_dict
from .compress import registry
from .compress.registry import AdapterSpec, DemoContext, StudentSpec
from .compress.student import layer_spec
from .course import grading
from .train import distributed
from .train.trainer import TrainConfig, merge_callbacks


@dataclass
class ModelSection:
    """Which model to start from and where it runs."""

    path: str = "minilm-l6"  # an asset name or a checkpoint folder
    backend: str = "numba"  # numpy | numba | torch
    device: str | None = None  # torch's device, e.g. cuda (default: cpu)


@dataclass
class DataSection:
    """Which task and files to train and evaluate on."""

    task: str = "rotten_tomatoes"  # rotten_tomatoes, conll2003 (NER), a GLUE task, or "files"
    data_dir: str | None = None  # GLUE folder
    train_file: str | None = None  # task = files: CSV, TSV, JSON lines, parquet; CoNLL / token JSON lines; SQuAD JSON
    dev_file: str | None = None  # task = files: the dev split (optional)
    test_file: str | None = None  # task = files: the test split (optional)
    text_column: str = "text"  # the column holding the text
    text_pair_column: str | None = None  # a second text column, for sentence pairs
    label_column: str = "label"  # the column holding the label
    labels: list | None = None  # the label names in class order (default: those found in train_file)
    format: str | None = None  # task = files: csv | tsv | json | parquet | conll | tokens (JSON lines of tokens / tags) | squad (default: from the suffix; .conll / .iob → conll)
    tag_column: int = -1  # conll: the column holding the tag (default: the last)
    tag_scheme: str = "BIO"  # token files: BIO (IOB2) or BIOES, checked on reading
    stride: int | None = None  # tokens shared by neighbouring windows of a long sentence / context (default: 32 for tagging, 128 for QA)
    max_train_examples: int | None = None  # train on the first N training examples only
    max_eval_examples: int | None = None  # evaluate on the first N dev / test examples only


@dataclass
class _FinetuneBase:
    """Everything ``minidistill finetune`` needs."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/finetune"  # where the model, its tokenizer and metrics.json are saved
    overwrite: bool = False  # replace a model already saved in output_dir
    resume: bool | None = None  # continue a killed run from its checkpoints (default: when there are some of this run)
    adapters: str = "none"  # parameter-efficient fine-tuning: none, or an adapters method (compacter, houlsby …)
    adapter_reduction: int | None = None  # default: 16 for dense adapters, 32 for Compacter
    phm_n: int = 4  # PHM adapters: n, the number of Kronecker terms
    phm_rank: int = 1  # compacter: rank of each PHM fast weight (1 = the paper's rank-one s tᵀ)
    train_pooler: bool = False  # adapters: also train BERT's pooler (a two-layer head)
    classifier_pooling: str | None = None  # what the pooler reads: cls | mean (over real tokens); default: the checkpoint's


#: the student section: its kind (the method that makes it) and its size (``compress.registry``)
StudentSection = StudentSpec


@dataclass
class ObjectivesSection:
    """Weights of the distillation objectives (0 = off) and their settings."""

    soft_kd: float = 1.0  # T² · KL(teacher ‖ student) on logits softened by the temperature
    temperature: float = 2.0  # T of soft_kd
    hard_kd: float = 0.0  # cross-entropy on the teacher's argmax labels
    logit_mse: float = 0.0  # MSE between the logits
    hidden_mse: float = 0.0  # MSE between mapped hidden states (a projection when widths differ)
    hidden_cosine: float = 0.0  # 1 − cosine between mapped hidden states
    attention_mse: float = 0.0  # MSE between mapped attention scores (TinyBERT)
    attention_kl: float = 0.0  # KL between mapped attention distributions
    attention_prob_mse: float = 0.0  # MSE between mapped attention probabilities (XtremeDistil's transformer students)
    value_relation: float = 0.0  # MiniLM: KL between value relations of the last layers
    minilm_v2: float = 0.0  # MiniLMv2: Q-Q, K-K and V-V relations of the last layers
    relation_heads: int = 12  # MiniLMv2: relation heads both models are reshaped to
    hidden_map: str = "uniform"  # uniform | skip | layers (uniform without the embeddings) | last | combine | combine-linear | teacher states "0,3,6"
    attention_map: str = "uniform"  # uniform (= layers) | last | teacher layers "2,5"
    task: float = 0.0  # cross-entropy on the labels


@dataclass
class TransferSection:
    """Unlabelled transfer data: the training texts plus augmented copies."""

    augment_copies: int = 0  # augmented copies of each training text in the transfer set
    p_mask: float = 0.1  # augmentation: probability of masking a word
    p_replace: float = 0.1  # augmentation: probability of replacing a word
    seed: int = 0  # augmentation seed


@dataclass
class _DistillBase:
    """Everything ``minidistill distill`` needs."""

    teacher: ModelSection = field(default_factory=lambda: ModelSection(path="runs/demo/teacher"))
    student: StudentSection = field(default_factory=StudentSection)
    objectives: ObjectivesSection = field(default_factory=ObjectivesSection)
    data: DataSection = field(default_factory=DataSection)
    transfer: TransferSection = field(default_factory=TransferSection)
    recipe: str = "single"  # single | xtremedistil | xtremedistil-hard | xtremedistil-soft
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, epochs=3, max_length=64))
    output_dir: str = "runs/distill"  # where the student, its tokenizer and metrics.json are saved
    overwrite: bool = False  # replace a model already saved in output_dir
    resume: bool | None = None  # continue a killed run from its checkpoints (default: when there are some of this run)
    cache_dir: str | None = None  # cache the teacher's outputs here (reused by later runs on the same data)


@dataclass
class CorpusSection:
    """The raw text of task-agnostic (general) distillation, packed and masked afresh each step."""

    train: list = field(default_factory=lambda: ["debian-docs"])  # text / JSON-lines files or folders, or a named corpus (debian-docs)
    held_out: list | None = None  # text to score masked-LM accuracy and perplexity on (default: a named corpus's valid split)
    seq_len: int = 128  # tokens per packed sequence, [CLS] and [SEP] included
    cross_documents: bool = False  # pack across document boundaries ([SEP] between them), BERT's pre-training layout
    mlm_probability: float = 0.15  # share of the non-special tokens masked (80% [MASK], 10% random, 10% kept)
    whole_word: bool = False  # mask whole words (every sub-word of a chosen word)
    cache_dir: str = "runs/corpus-cache"  # where the tokenised corpora are kept (one folder per corpus and tokenizer)
    max_held_out_batches: int | None = None  # score only the first N held-out batches (default: all)


@dataclass
class _GeneralBase:
    """Everything ``minidistill general`` needs."""

    teacher: ModelSection = field(default_factory=lambda: ModelSection(path="runs/mlm-head"))
    student: StudentSection = field(default_factory=StudentSection)
    objectives: ObjectivesSection = field(default_factory=ObjectivesSection)  # objectives.task: the student's own MLM loss
    corpus: CorpusSection = field(default_factory=CorpusSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, max_steps=1000, batch_size=32, max_length=128,
                                                                   warmup_ratio=0.05))
    output_dir: str = "runs/general"  # where the general student, its tokenizer and metrics.json are saved
    overwrite: bool = False  # replace a model already saved in output_dir
    resume: bool | None = None  # continue a killed run from its checkpoints (default: when there are some of this run)


#: Named recipes, each the measured one (benchmarks/RESULTS.md, MiniLM-L6 on rotten_tomatoes,
#: 2 CPU cores): ``minidistill finetune --preset=teacher``. A preset is applied first; the TOML
#: file and --section.key=value overrides change it.
_RUN = {"batch_size": 32, "max_length": 64, "warmup_ratio": 0.1}
PRESETS = {
    "finetune": {
        "teacher": ("full fine-tuning: test 0.845 ± 0.004 over 3 seeds, about 11 minutes",
                    {"train": {**_RUN, "lr": 1e-4, "epochs": 2, "eval_every": 267}}),
        "compacter": ("Compacter adapters on the teacher, 0.11% trained: test 0.827 ± 0.005 over 3 seeds, about 22 minutes",
                      {"adapters": "compacter", "train": {**_RUN, "lr": 3e-3, "epochs": 6, "eval_every": 320}}),
    },
    "distill": {
        "student": ("2-layer student, soft KD (T 2) + label cross-entropy, lower init, 1 epoch: test 0.824 (97.0%), 2.9× faster",
                    {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                     "objectives": {"soft_kd": 1.0, "temperature": 2.0, "task": 1.0},
                     "train": {**_RUN, "lr": 2e-4, "epochs": 1}}),
        "wid": ("WID to 6 × 288, soft KD, 2 epochs, folded: test 0.836 (98.4%), 1.5× faster",
                {"student": {"kind": "wid", "hidden_size": 288, "num_attention_heads": 9, "intermediate_size": 1152},
                 "objectives": {"soft_kd": 1.0, "temperature": 2.0}, "train": {**_RUN, "lr": 2e-4, "epochs": 2}}),
        "bilstm": ("XtremeDistil BiLSTM, staged, augmented transfer set: test 0.810 (95.3%), 14.6× faster",
                   {"student": {"kind": "bilstm"}, "bilstm": {"hidden_size": 128, "embedding_size": 64},
                    "recipe": "xtremedistil", "transfer": {"augment_copies": 1},
                    "objectives": {"soft_kd": 1.0, "temperature": 2.0},
                    "train": {**_RUN, "lr": 2e-3, "epochs": 1, "warmup_ratio": 0.05}}),
        "theseus": ("BERT-of-Theseus as the original trains it: 3 successor layers (the predecessor's first three) "
                    "replacing layer pairs, constant p = 0.5 for half the run then 1, only the successor layers "
                    "trained, the task cross-entropy alone, lr 2e-5, batch 32, 3 epochs (the original 15): test 0.792 "
                    "(93.2%), 17.4M parameters, about 11 minutes — below our default Theseus recipe at this budget "
                    "(soft KD, everything trained, lr 2e-4: 0.830)",
                    {"student": {"kind": "theseus", "num_layers": 3, "init": "lower"},
                     "theseus": {"replace": "constant", "rate": 0.5, "train": "layers"},
                     "objectives": {"soft_kd": 0.0, "task": 1.0}, "train": {**_RUN, "lr": 2e-5, "epochs": 3}}),
        "minialbert": ("MiniALBERT E 96, 6 repeats, the original objectives (measured with the embedding pair in the hidden "
                       "map; the original's map is --objectives.hidden_map=layers), transfer set ×3: test 0.812 (95.5%), "
                       "22.7% of the parameters",
                       {"student": {"kind": "minialbert"}, "minialbert": {"embedding_size": 96, "repeats": 6},
                        "objectives": {"soft_kd": 5.0, "temperature": 1.0, "attention_kl": 3.0, "hidden_cosine": 3.0},
                        "transfer": {"augment_copies": 2}, "train": {**_RUN, "lr": 2e-4, "epochs": 2}}),
    },
}


_GENERAL = {"batch_size": 32, "max_length": 128, "warmup_ratio": 0.05}
_NO_KD = {"soft_kd": 0.0}
PRESETS["general"] = {
    "kd": ("How to Distill (task-agnostic): 2-layer student (lower init), KD (T 1) on the masked-LM logits at the "
           "masked positions + its own MLM loss",
           {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
            "objectives": {"soft_kd": 1.0, "temperature": 1.0, "task": 1.0}, "train": {**_GENERAL, "lr": 2e-4}}),
    "kd-hidden": ("kd + hidden-state MSE on the uniform layer map (student l ↔ teacher 3l, embeddings included)",
                  {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                   "objectives": {"soft_kd": 1.0, "temperature": 1.0, "task": 1.0, "hidden_mse": 1.0},
                   "train": {**_GENERAL, "lr": 2e-4}}),
    "kd-attention": ("kd + attention KL on the uniform layer map (student layer l ↔ teacher layer 3l + 2)",
                     {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                      "objectives": {"soft_kd": 1.0, "temperature": 1.0, "task": 1.0, "attention_kl": 1.0},
                      "train": {**_GENERAL, "lr": 2e-4}}),
    "minilm": ("MiniLM: 2-layer student (lower init), the last layer's attention distributions and value relations "
               "(KL), no logit or MLM term, as the original",
               {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                "objectives": {**_NO_KD, "attention_kl": 1.0, "value_relation": 1.0, "attention_map": "last"},
                "train": {**_GENERAL, "lr": 2e-4}}),
    "minilmv2": ("MiniLMv2: the last layer's Q-Q, K-K and V-V relations (KL, 12 relation heads), no logit term",
                 {"student": {"kind": "transformer", "num_layers": 2, "init": "lower"},
                  "objectives": {**_NO_KD, "minilm_v2": 1.0, "relation_heads": 12, "attention_map": "last"},
                  "train": {**_GENERAL, "lr": 2e-4}}),
    "wid": ("WID, task-agnostic as the original: compactors on every linear map (the MLM transform too), the MLM loss "
            "only, pruned to 6 × 192 and folded to a plain BertForMaskedLM",
            {"student": {"kind": "wid", "hidden_size": 192, "num_attention_heads": 6, "intermediate_size": 768},
             "objectives": {**_NO_KD, "task": 1.0}, "train": {**_GENERAL, "lr": 1e-4}}),
    "minialbert": ("MiniALBERT general distillation as the original: 1·MLM + 3·(attention KL + hidden cosine) + "
                   "5·KL (T 1) on the MLM logits, layer map without an embedding pair; E 128, 6 repeats",
                   {"student": {"kind": "minialbert"}, "minialbert": {"embedding_size": 128, "repeats": 6},
                    "objectives": {"soft_kd": 5.0, "temperature": 1.0, "task": 1.0, "attention_kl": 3.0,
                                   "hidden_cosine": 3.0, "hidden_map": "layers", "attention_map": "layers"},
                    "train": {**_GENERAL, "lr": 2e-4}}),
}


def _with_method_sections(base, roles: tuple):
    """``base`` plus one config section per registered method of ``roles`` with settings: a
    student method's section is always there (read when ``student.kind`` names it); a training
    method's is None until one of its keys is given, which turns the method on."""
    extra = []
    for m in registry.methods().values():
        if m.settings is None or m.role not in roles:
            continue
        if m.role == "training":
            extra.append((m.name, m.settings | None, field(default=None)))
        else:
            extra.append((m.name, m.settings, field(default_factory=m.settings)))
    cls = dataclasses.make_dataclass(base.__name__.lstrip("_").replace("Base", "Config"), extra, bases=(base,))
    cls.__module__, cls.__doc__ = __name__, base.__doc__
    return cls


FinetuneConfig = _with_method_sections(_FinetuneBase, ("training",))
DistillConfig = _with_method_sections(_DistillBase, ("student", "training"))
GeneralConfig = _with_method_sections(_GeneralBase, ("student", "training"))


def _preset(command: str, name: str | None) -> dict:
    """The config table of a named recipe (empty without one)."""
    return {} if name is None else PRESETS[command][name][1]


def _preset_lines(command: str) -> str:
    return "\n".join(f"  {name:12s} {about}" for name, (about, _) in PRESETS[command].items())


def _training_callbacks(cfg) -> dict:
    """The Trainer callbacks of every training method switched on in ``cfg``."""
    return merge_callbacks(*(m.callbacks(getattr(cfg, m.name)) for m in registry.methods("training").values()
                             if getattr(cfg, m.name, None) is not None))


def build_objectives(o: ObjectivesSection, student, teacher) -> list:
    """The objectives an :class:`ObjectivesSection` switches on, sized for the two models."""
    from .compress import kd

    ls = getattr(student.config, "num_hidden_layers", None)
    lt, dt = teacher.config.num_hidden_layers, teacher.config.hidden_size
    ds = getattr(student.config, "hidden_size", None)
    out = []
    if o.soft_kd:
        out.append(kd.SoftKD(o.soft_kd, o.temperature))
    if o.hard_kd:
        out.append(kd.HardKD(o.hard_kd))
    if o.logit_mse:
        out.append(kd.LogitMSE(o.logit_mse))
    layered = [o.hidden_mse, o.hidden_cosine, o.attention_mse, o.attention_kl, o.attention_prob_mse, o.value_relation,
               o.minilm_v2]
    if any(layered) and ls is None:
        raise ConfigError("layer objectives (hidden_*, attention_*, value_relation, minilm_v2) need a transformer student")
    hmap = kd.LayerMap.build(layer_spec(o.hidden_map), ls, lt, "hidden") if ls else None
    amap = kd.LayerMap.build(layer_spec(o.attention_map), ls, lt, "attention") if ls else None
    if o.hidden_mse:
        out.append(kd.HiddenMSE(hmap, ds, dt, o.hidden_mse))
    if o.hidden_cosine:
        out.append(kd.HiddenCosine(hmap, ds, dt, o.hidden_cosine))
    if o.attention_mse:
        out.append(kd.AttentionScoreMSE(amap, o.attention_mse))
    if o.attention_kl:
        out.append(kd.AttentionKL(amap, o.attention_kl))
    if o.attention_prob_mse:
        out.append(kd.AttentionProbMSE(amap, o.attention_prob_mse))
    if o.value_relation:
        out.append(kd.ValueRelationKL(amap, o.value_relation))
    if o.minilm_v2:
        out.append(kd.MiniLMv2Relations(amap, o.relation_heads, weight=o.minilm_v2))
    return out


def distill_run(cfg: DistillConfig, announce=print) -> dict:
    """Distil a fine-tuned teacher into a student as configured; save the student (HF format
    for transformers) with its tokenizer and ``metrics.json``; return the figures."""
    import minidistill as md
    from .compress import Stage, distill, xtremedistil_stages
    from .train.trainer import time_step
    from .data import Tokenizer, augment
    from .models import load_model

    _check_output_dir(cfg)
    path = _model_path(cfg.teacher.path, "teacher")
    train, dev, test = load_splits(cfg.data, announce)
    tok = Tokenizer.from_pretrained(path)
    teacher = load_model(path, backend=cfg.teacher.backend, device=distributed.local_device(cfg.teacher.device))
    announce = _join_workers(teacher, announce)
    _check_model_fits(teacher, train, path, "the teacher at")
    st = cfg.student
    train_cfg = cfg.train
    total_steps = train_cfg.max_steps or train_cfg.epochs * train.num_batches(train_cfg.batch_size, tok, train_cfg.max_length)
    try:
        method = registry.get(st.kind, "student")
    except KeyError as e:
        raise ConfigError(f"student.kind: {e.args[0]}") from None
    if cfg.recipe not in method.recipes:
        raise ConfigError(f"recipe must be one of {', '.join(method.recipes)} for {st.kind} students, got {cfg.recipe!r}")
    try:
        student = method.build(teacher, st, getattr(cfg, st.kind, None), total_steps)
    except ValueError as e:
        raise ConfigError(f"student ({st.kind}): {e}") from None
    if method.keep_last:  # its best dev state is not a finished one (WID is still pruning then)
        train_cfg = dataclasses.replace(train_cfg, load_best_at_end=False)
    train_cfg, resume = _checkpointing(dataclasses.replace(cfg, train=train_cfg), total_steps)
    student.train()
    tr = cfg.transfer
    transfer = train.without_labels()
    if tr.augment_copies:
        if train.task.kind != "sequence":
            raise ConfigError("transfer.augment_copies rewrites sentences: it is for sentence tasks (tags and answer "
                              "spans would no longer line up)")
        transfer = augment(transfer, tok, tr.augment_copies, tr.p_mask, tr.p_replace, tr.seed)
    md.manual_seed(cfg.train.seed)
    start = time.perf_counter()
    if cfg.recipe == "single":
        objectives = build_objectives(cfg.objectives, student, teacher)
        stages = [Stage("distill", objectives, cfg.objectives.task,
                        data="train" if cfg.objectives.task or not tr.augment_copies else "transfer")]
    else:
        variant = cfg.recipe.partition("-")[2] or "staged"
        stages = xtremedistil_stages(student, teacher, variant, temperature=cfg.objectives.temperature)
    announce(f"distilling {cfg.teacher.path} ({teacher.num_parameters() / 1e6:.1f}M) into a {st.kind} student "
             f"({student.num_parameters() / 1e6:.1f}M) on {train.task.name}: stages "
             f"{', '.join(s.name for s in stages)}; transfer set {len(transfer)} texts")
    teacher_s = _teacher_seconds(teacher, tok, train, train_cfg)
    live = cfg.cache_dir is None or any(_needs_live_teacher(s.objectives) for s in stages)
    step_seconds = time_step(student, tok, train, train_cfg) + (teacher_s if live else 0.0)
    plan = _plan_distill(stages, student, {"train": train, "transfer": transfer}, train_cfg, step_seconds)
    if not live:  # the cache costs one teacher pass over the transfer set (once for every later run)
        plan += (f", and {_duration(teacher_s * transfer.num_batches(train_cfg.batch_size, tok, train_cfg.max_length))} for the teacher's cache "
                 "unless an earlier run on this data made it")
    announce(plan)
    own = student.callbacks() if callable(getattr(student, "callbacks", None)) else None  # WID's, Theseus's schedules
    callbacks = merge_callbacks(own, _training_callbacks(cfg))
    if resume:
        announce(f"continuing the killed run from its checkpoints in {train_cfg.checkpoint_dir}")
    trainer = distill(teacher, student, tok, train, dev, stages=stages, transfer_data=transfer, config=train_cfg,
                      cache_dir=cfg.cache_dir, callbacks=callbacks, resume=resume)
    result = {"task": train.task.name, "teacher_parameters": teacher.num_parameters(),
              "train_seconds": time.perf_counter() - start,
              "steps": sum(r["steps"] for r in trainer.stage_log), "stages": trainer.stage_log}
    if method.folds:
        student, result["fold"] = _fold_student(student, announce)
    result["parameters"] = student.num_parameters()
    return _evaluate_and_save(student, tok, dev, test, cfg, result)


def _packed_corpus(spec, tok, c: CorpusSection, seed: int, announce):
    """A masked, packed corpus of ``spec`` (tokenised once into ``c.cache_dir``, a folder per
    corpus and tokenizer, so several corpora and tokenizers live side by side)."""
    import hashlib

    from .data import CorpusCache, MaskingCollator, PackedCorpus, resolve_corpus
    from .data.corpus import tokenizer_fingerprint

    files = [str(p.resolve()) for p in resolve_corpus(spec)]
    key = hashlib.sha1(json.dumps([files, tokenizer_fingerprint(tok)]).encode()).hexdigest()[:12]
    folder = Path(c.cache_dir) / key
    if not (folder / "meta.json").is_file() or not json.loads((folder / "meta.json").read_text()).get("complete"):
        announce(f"tokenising {', '.join(map(str, spec))} into {folder} (once; an interrupted build resumes)")
    cache = CorpusCache.build(folder, tok, files)
    masking = MaskingCollator(tok, probability=c.mlm_probability, whole_word=c.whole_word, seed=seed)
    return PackedCorpus(cache, tok, c.seq_len, cross_documents=c.cross_documents, masking=masking)


def general_run(cfg, announce=print) -> dict:
    """Task-agnostic distillation: a masked-LM (or bare-encoder) teacher, a student of any kind,
    raw text masked afresh each step; the student's own MLM loss is ``objectives.task``.
    Saves the general student (folded for WID), its tokenizer and ``metrics.json`` with the
    held-out masked-LM accuracy and perplexity of the student and the teacher."""
    import minidistill as md
    from .compress import Stage, distill
    from .models import head_kind, load_model
    from .data import CORPORA, Tokenizer
    from .data.corpus import held_out_split
    from .train.mlm import evaluate_masked_lm

    _check_output_dir(cfg)
    path = _model_path(cfg.teacher.path, "teacher")
    tok = Tokenizer.from_pretrained(path)
    teacher = load_model(path, backend=cfg.teacher.backend, device=distributed.local_device(cfg.teacher.device))
    announce = _join_workers(teacher, announce)
    kind = head_kind(teacher)
    if kind not in ("mlm", None):
        raise ConfigError(f"general distillation needs a masked-LM teacher or a bare encoder; {cfg.teacher.path} has a "
                          f"{kind} head (minidistill mlm-head fits a masked-LM head to a checkpoint without one)")
    c = cfg.corpus
    if c.seq_len > teacher.config.max_position_embeddings:
        raise ConfigError(f"corpus.seq_len {c.seq_len} exceeds the teacher's {teacher.config.max_position_embeddings} "
                          "positions")
    held_spec = c.held_out or held_out_split(c.train)
    if held_spec is None:
        raise ConfigError("corpus.held_out is required unless corpus.train is one named corpus "
                          f"({', '.join(CORPORA)}), whose valid split is then used")
    train = _packed_corpus(list(c.train), tok, c, cfg.train.seed, announce)
    held = _packed_corpus(list(held_spec), tok, c, 12345, announce)  # fixed masks: every model scored alike
    train_cfg = dataclasses.replace(cfg.train, max_length=c.seq_len, eval_every=None, load_best_at_end=False,
                                    early_stopping_patience=None)
    total_steps = train_cfg.max_steps or train_cfg.epochs * train.num_batches(train_cfg.batch_size)
    st = cfg.student
    try:
        method = registry.get(st.kind, "student")
    except KeyError as e:
        raise ConfigError(f"student.kind: {e.args[0]}") from None
    if st.kind == "bilstm":
        raise ConfigError("student.kind=bilstm has no masked-LM head: XtremeDistil's BiLSTM learns from a task "
                          "teacher (minidistill distill)")
    try:
        student = method.build(teacher, st, getattr(cfg, st.kind, None), total_steps)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"student ({st.kind}): {e}") from None
    o = cfg.objectives
    if (o.soft_kd or o.hard_kd or o.logit_mse) and (kind != "mlm" or head_kind(student) != "mlm"):
        raise ConfigError("logit objectives (soft_kd, hard_kd, logit_mse) compare masked-LM logits: the teacher and "
                          "the student both need a masked-LM head")
    if o.task and head_kind(student) != "mlm":
        raise ConfigError("objectives.task is the student's own MLM loss: it needs a masked-LM student")
    objectives = build_objectives(o, student, teacher)
    train_cfg, resume = _checkpointing(dataclasses.replace(cfg, train=train_cfg), total_steps)
    stage = Stage("general", objectives, o.task, data="train")
    announce(f"general distillation of {cfg.teacher.path} ({teacher.num_parameters() / 1e6:.1f}M) into a {st.kind} "
             f"student ({student.num_parameters() / 1e6:.1f}M): {len(train)} sequences of {c.seq_len}, "
             f"{total_steps} steps of {train_cfg.batch_size}; objectives "
             f"{', '.join(type(x).__name__ for x in objectives) or 'none'}" + (f" + MLM × {o.task}" if o.task else ""))
    own = student.callbacks() if callable(getattr(student, "callbacks", None)) else None
    callbacks = merge_callbacks(own, _training_callbacks(cfg))
    if resume:
        announce(f"continuing the killed run from its checkpoints in {train_cfg.checkpoint_dir}")
    md.manual_seed(cfg.train.seed)
    start = time.perf_counter()
    student.train()
    trainer = distill(teacher, student, tok, train, None, stages=[stage], transfer_data=train, config=train_cfg,
                      callbacks=callbacks, resume=resume)
    result = {"corpus": [str(x) for x in c.train], "held_out": [str(x) for x in held_spec],
              "teacher_parameters": teacher.num_parameters(), "train_seconds": time.perf_counter() - start,
              "steps": sum(r["steps"] for r in trainer.stage_log), "stages": trainer.stage_log}
    if method.folds:
        student, result["fold"] = _fold_student(student, announce)
    student.eval()
    result["parameters"] = student.num_parameters()
    if head_kind(student) == "mlm":
        bs = train_cfg.eval_batch_size
        result["held_out_mlm"] = evaluate_masked_lm(student, tok, held, bs, c.seq_len, c.max_held_out_batches)
        if kind == "mlm":
            result["teacher_held_out_mlm"] = evaluate_masked_lm(teacher, tok, held, bs, c.seq_len, c.max_held_out_batches)
    return _save_run(student, tok, cfg, result)


def _fold_student(student, announce) -> tuple:
    """Fold a student into a plain model (a student whose schedule the run did not finish, as a
    WID run too short for its last pruning round, completes it first: ``finish_schedule()``);
    returns it and the fold report as a dict."""
    from .compress import fold

    finish = getattr(student, "finish_schedule", None)
    if callable(finish) and (note := finish()):
        announce(note)
    folded, report = fold(student, return_report=True)
    announce(str(report))
    return folded, {"params_before": report.params_before, "params_after": report.params_after,
                    "max_residual": report.max_residual}


def _model_path(spec: str, role: str = "model") -> Path:
    """The folder of ``spec``: an asset name (fetched on first use) or a checkpoint folder, which
    must hold a ``config.json`` (the error names the role: the teacher, the model)."""
    from . import assets

    if spec in assets.ASSETS:
        return assets.path(spec)
    path = Path(spec)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "holds no config.json (not a saved model)"
        raise ConfigError(f"{role}.path {spec!r} {what}; give a checkpoint folder or an asset name "
                          f"({', '.join(sorted(assets.ASSETS))})")
    return path


#: runs of this many optimiser steps or more write checkpoints unless told otherwise (a few
#: minutes on 2 cores at the demo's sizes)
AUTO_CHECKPOINT_STEPS = 200
_NOT_THE_RUN = ("overwrite", "resume")  # keys that do not change what a run computes


def _run_identity(cfg) -> dict:
    """What identifies a run for resuming: its config without the keys that change nothing."""
    d = json.loads(json.dumps(to_dict(cfg), default=str))
    for key in _NOT_THE_RUN:
        d.pop(key, None)
    for key in ("progress", "checkpoint_every", "checkpoint_dir", "keep_checkpoints", "log_file"):
        d["train"].pop(key, None)
    return d


def _checkpointing(cfg, total_steps: int) -> tuple:
    """``(train config, resume)``: checkpoints go to ``train.checkpoint_dir`` (default
    ``OUTPUT_DIR/checkpoints``), every ``train.checkpoint_every`` steps (default: a tenth of a
    run of at least ``AUTO_CHECKPOINT_STEPS`` steps; 0: none). A folder holding checkpoints of
    this very run means the run was killed: it continues (``resume`` unset or true); checkpoints of
    another run are an error, unless ``--resume=false`` starts afresh. In a data-parallel run the
    first process decides (and writes ``run.json``) and the others follow it."""
    if not distributed.is_main():  # the first process decides and tells the others
        return distributed.broadcast_object(None)
    return distributed.broadcast_object(_checkpointing_here(cfg, total_steps))


def _checkpointing_here(cfg, total_steps: int) -> tuple:
    import shutil

    from .fileio import write_json

    t = cfg.train
    folder = Path(t.checkpoint_dir) if t.checkpoint_dir else Path(cfg.output_dir) / "checkpoints"
    every = t.checkpoint_every
    if every is None:
        every = max(1, total_steps // 10) if total_steps >= AUTO_CHECKPOINT_STEPS else 0
    run, record, resume = _run_identity(cfg), folder / "run.json", False
    if record.is_file():
        saved = json.loads(record.read_text())
        if cfg.resume is False:
            shutil.rmtree(folder)
        elif saved != run:
            changed = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
            raise ConfigError(f"{folder} holds checkpoints of another run (its {', '.join(changed)} differ); run "
                              "that command again to continue it, or pass --resume=false to start this one afresh")
        else:
            resume = True
    elif cfg.resume:
        raise ConfigError(f"--resume: {folder} holds no checkpoints of this run")
    if not every and not resume:
        return dataclasses.replace(t, checkpoint_every=0), False
    write_json(record, run)
    return dataclasses.replace(t, checkpoint_dir=str(folder), checkpoint_every=every), resume


def _join_workers(model, announce):
    """Join the data-parallel process group when torchrun launched this process (a no-op
    otherwise); only the first process announces."""
    distributed.setup(model.backend)
    return announce if distributed.is_main() else (lambda *args, **kwargs: None)


def _drop_checkpoints(cfg) -> None:
    """After the model is saved: the default checkpoint folder inside the output goes."""
    import shutil

    if not cfg.train.checkpoint_dir:
        shutil.rmtree(Path(cfg.output_dir) / "checkpoints", ignore_errors=True)


def _check_output_dir(cfg) -> None:
    """Refuse to replace a model saved in ``cfg.output_dir`` unless ``overwrite`` is set, before
    any work is done: a finished run is never lost to a repeated command."""
    out = Path(cfg.output_dir)
    if not cfg.overwrite and any((out / name).exists() for name in ("config.json", "metrics.json")):
        raise ConfigError(f"{out} already holds a saved model; pass --overwrite=true to replace it, "
                          f"or choose another --output_dir")


def load_splits(cfg: DataSection, announce=None):
    """(train, dev, test) datasets of the configured task (dev and test may be None). With
    user files and no ``labels`` given, ``announce`` (if given) hears the label set found, and
    about classes seen once or missing from dev."""
    from .data import load_dataset, load_file, load_squad_file, load_tagged_file

    if cfg.task == "files":
        if not cfg.train_file:
            raise ConfigError("data.task = 'files' needs data.train_file")
        fmt = _file_format(cfg)
        if fmt in ("conll", "tokens"):
            def read(path, labels):
                return load_tagged_file(path, labels, scheme=cfg.tag_scheme, format="jsonl" if fmt == "tokens" else "conll",
                                        tag_column=cfg.tag_column)
            train = read(cfg.train_file, cfg.labels)
            labels = train.task.labels
            dev, test = (read(f, labels) if f else None for f in (cfg.dev_file, cfg.test_file))
        elif fmt == "squad":
            train = load_squad_file(cfg.train_file)
            dev, test = (load_squad_file(f) if f else None for f in (cfg.dev_file, cfg.test_file))
        else:
            kw = dict(text_column=cfg.text_column, text_pair_column=cfg.text_pair_column,
                      label_column=cfg.label_column, labels=cfg.labels, format=fmt)
            train = load_file(cfg.train_file, **kw)
            kw["labels"] = train.task.labels
            dev = load_file(cfg.dev_file, **kw) if cfg.dev_file else None
            test = load_file(cfg.test_file, **kw) if cfg.test_file else None
            if announce is not None and cfg.labels is None and train.labels is not None:
                _announce_labels(train, dev, announce)
    else:
        train = load_dataset(cfg.task, "train", cfg.data_dir)
        dev = load_dataset(cfg.task, "dev", cfg.data_dir)
        test = load_dataset(cfg.task, "test", cfg.data_dir) if cfg.task in ("rotten_tomatoes", "conll2003") else None
    if cfg.stride is not None:
        for d in (train, dev, test):
            if d is not None and hasattr(d, "stride"):
                d.stride = cfg.stride
            elif d is not None and hasattr(d, "doc_stride"):
                d.doc_stride = cfg.stride
    if cfg.max_train_examples:
        train = train.select(range(min(cfg.max_train_examples, len(train))))
    if cfg.max_eval_examples:
        dev, test = (None if d is None else d.select(range(min(cfg.max_eval_examples, len(d)))) for d in (dev, test))
    return train, dev, test


TABLE_FORMATS = ("csv", "tsv", "json", "parquet")
TOKEN_SUFFIXES = (".conll", ".iob", ".iob2", ".bio", ".bioes", ".conllu")


def _file_format(cfg: DataSection) -> str | None:
    """The format of ``data.train_file``: ``data.format``, else its suffix (None: a table
    format that :func:`~minidistill.data.load_file` infers itself)."""
    known = TABLE_FORMATS + ("conll", "tokens", "squad")
    if cfg.format is not None:
        if cfg.format not in known:
            raise ConfigError(f"data.format must be one of {', '.join(known)}, got {cfg.format!r}")
        return cfg.format
    path = Path(cfg.train_file)
    suffix = path.suffix.lower()
    if suffix in TOKEN_SUFFIXES:
        return "conll"
    if suffix == ".json" and path.is_file():  # SQuAD's layout: one object with "data" → "paragraphs"
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
        if '"paragraphs"' in head and '"data"' in head:
            return "squad"
    return None


def _duration(seconds: float) -> str:
    """``about 40 s`` / ``about 12 minutes`` / ``about 1.5 hours``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


def _needs_live_teacher(objectives) -> bool:
    """Objectives a cache of logits and hidden states cannot serve (attention maps, Q/K/V)."""
    from .compress.kd import needed_outputs

    flags = needed_outputs(objectives)
    return flags["output_attentions"] or flags["output_attention_scores"] or flags["output_qkv"]


def _teacher_seconds(teacher, tok, data, cfg) -> float:
    """Seconds of the teacher's forward pass on one batch (what a distillation step adds when
    the teacher runs live; a cache makes it cheaper after its first pass)."""
    from .core.tensor import no_grad
    from .data.datasets import model_inputs

    batch = model_inputs(next(iter(data.batches(tok, cfg.batch_size, cfg.max_length, shuffle=False))))
    with no_grad():
        teacher(**batch)
        start = time.perf_counter()
        teacher(**batch)
        return time.perf_counter() - start


def _plan_distill(stages, student, datasets: dict, cfg, step_seconds: float) -> str:
    """The run ahead, before it starts: steps per stage and phase, and the time they will take
    at ``step_seconds`` per step (a WID step costs more than a plain one; a staged recipe has
    several phases)."""
    parts, total = [], 0
    for stage in stages:
        c = stage.config or cfg
        data = datasets[stage.data]
        per_phase = c.max_steps or c.epochs * data.num_batches(c.batch_size)
        phases = len(student.layer_groups()) if stage.unfreeze else 1
        total += per_phase * phases
        parts.append(f"{stage.name} {phases} × {per_phase}" if phases > 1 else f"{stage.name} {per_phase}")
    return (f"plan: {total} steps ({', '.join(parts)}), {step_seconds:.2f} s a step measured here: "
            f"{_duration(total * step_seconds)} of training")


def _announce_labels(train, dev, announce) -> None:
    """The label set found in the training file, and what looks wrong with it."""
    names = train.task.labels
    counts = np.bincount(train.labels, minlength=len(names))
    announce(f"labels found in {train.task.name} (none given): "
             + ", ".join(f"{n!r} ×{c}" for n, c in zip(names, counts)))
    once = [n for n, c in zip(names, counts) if c == 1]
    if once:
        announce(f"warning: label(s) {once} occur once in the training file: a typo, or a class too rare to learn")
    if dev is not None and dev.labels is not None:
        missing = [n for i, n in enumerate(names) if not (dev.labels == i).any()]
        if missing:
            announce(f"warning: label(s) {missing} of the training file never occur in the dev file")


def finetune(cfg: FinetuneConfig, announce=print) -> dict:
    """Fine-tune a BERT on a task; save it to ``cfg.output_dir``; return the figures."""
    import minidistill as md
    from .data import Tokenizer
    from .models import BertConfig
    from .models.auto import task_model_class
    from .train import Trainer
    from .train.trainer import has_checkpoint, latest_checkpoint, time_step

    if cfg.classifier_pooling is not None and cfg.classifier_pooling not in BertConfig.SUPPORTED_POOLING:
        raise ConfigError(f"classifier_pooling must be one of {', '.join(BertConfig.SUPPORTED_POOLING)} "
                          f"(or unset: the checkpoint's own), got {cfg.classifier_pooling!r}")
    _check_output_dir(cfg)
    path = _model_path(cfg.model.path)
    train, dev, test = load_splits(cfg.data, announce)
    task = train.task
    tok = Tokenizer.from_pretrained(path)
    md.manual_seed(cfg.train.seed)
    labels = {"num_labels": task.num_labels}
    if task.labels is not None and task.kind != "qa":
        labels["id2label"] = {i: str(n) for i, n in enumerate(task.labels)}
        labels["label2id"] = {str(n): i for i, n in enumerate(task.labels)}
    if cfg.classifier_pooling is not None:
        labels["classifier_pooling"] = cfg.classifier_pooling
    model_cls = task_model_class(path, task.kind)  # the task's head on the checkpoint's family (BERT, MiniALBERT)
    model = model_cls.from_pretrained(path, backend=cfg.model.backend,
                                      device=distributed.local_device(cfg.model.device), **labels)
    announce = _join_workers(model, announce)
    fresh = model.loading_info.get("newly_initialized", [])
    if any(k in fresh for k in model.head_parameter_names()):
        what = "span head (start and end)" if task.kind == "qa" else f"{task.kind} head for {task.num_labels} labels"
        announce(f"a fresh {what} ({cfg.model.path} has no head of that size)")
    _add_finetune_adapters(model, cfg, announce)
    steps = cfg.train.max_steps or cfg.train.epochs * train.num_batches(cfg.train.batch_size, tok, cfg.train.max_length)
    announce(f"fine-tuning {cfg.model.path} ({model.num_parameters() / 1e6:.1f}M parameters) on {task.name}: "
             f"{len(train)} examples, {steps} steps of {cfg.train.batch_size}, max length {cfg.train.max_length}, "
             f"backend {cfg.model.backend}")
    start = time.perf_counter()
    train_cfg, resume = _checkpointing(cfg, steps)
    step_seconds = time_step(model, tok, train, train_cfg)
    announce(f"plan: {steps} steps, {step_seconds:.2f} s a step measured here: {_duration(steps * step_seconds)} of training")
    trainer = Trainer(model, tok, train, dev, train_cfg, callbacks=_training_callbacks(cfg))
    if resume and has_checkpoint(train_cfg.checkpoint_dir):
        announce(f"continuing the killed run from {latest_checkpoint(train_cfg.checkpoint_dir)}")
        trainer.resume()
    trainer.train()
    train_seconds = time.perf_counter() - start
    result = {"task": task.name, "parameters": model.num_parameters(), "train_seconds": train_seconds,
              "steps": trainer.state.step, "trained_parameters": model.num_parameters(trainable_only=True),
              "adapters": cfg.adapters}
    return _evaluate_and_save(model, tok, dev, test, cfg, result)


def _add_finetune_adapters(model, cfg: FinetuneConfig, announce) -> None:
    """Insert and freeze for the configured parameter-efficient method (in place)."""
    kind = cfg.adapters
    known = registry.methods("adapters")
    if kind != "none" and kind not in known:
        raise ConfigError(f"adapters must be none or one of {', '.join(known)}, got {kind!r}")
    try:
        if kind != "none":
            known[kind].build(model, AdapterSpec(cfg.adapter_reduction, cfg.phm_n, cfg.phm_rank, cfg.train_pooler))
        elif cfg.train_pooler:
            raise ValueError("train_pooler is for adapter fine-tuning (full fine-tuning trains the pooler anyway)")
    except ValueError as e:
        raise ConfigError(f"adapters: {e}") from None
    if kind != "none":
        trained = model.num_parameters(trainable_only=True)
        announce(f"{kind}: training {trained:,} of {model.num_parameters():,} parameters "
                 f"({trained / model.num_parameters():.3%}: adapters, LayerNorms, "
                 f"{'pooler and classifier' if cfg.train_pooler else 'classifier'})")


def _save_run(model, tok, cfg, result: dict) -> dict:
    """Save the model, its tokenizer and ``metrics.json`` (with the config) into
    ``cfg.output_dir`` (the first process of a data-parallel run alone writes); drop the run's
    default checkpoint folder; return ``result`` with ``output_dir``."""
    from .fileio import write_json

    out = Path(cfg.output_dir)
    if distributed.is_main():
        model.save_pretrained(out)
        tok.save_pretrained(out)
        write_json(out / "metrics.json", {**result, "config": to_dict(cfg)})
        _drop_checkpoints(cfg)
    return {**result, "output_dir": str(out)}


def _evaluate_and_save(model, tok, dev, test, cfg, result: dict) -> dict:
    """Add dev/test metrics and sequences/s to ``result``, then save the model, its tokenizer
    and ``metrics.json`` into ``cfg.output_dir`` — only after everything succeeded, so a failed
    run leaves an older output untouched."""
    from .models.stats import transformers_reading
    from .train import evaluate

    for name, split in (("dev", dev), ("test", test)):
        if split is None:
            continue
        t0 = time.perf_counter()
        result[name] = evaluate(model, tok, split, cfg.train.eval_batch_size, cfg.train.max_length)
        result[f"{name}_seq_per_s"] = len(split) / (time.perf_counter() - t0)
    result = _save_run(model, tok, cfg, result)
    out = Path(result["output_dir"])
    if not distributed.is_main():
        return result
    readable, why = transformers_reading(model)
    if not readable:
        print(f"note: {out} is for minidistill: {why}")
    return result


def print_table(rows: list[dict], metric: str = "accuracy") -> None:
    """Print the demo's table: one row per model."""
    head = f"{'model':28s} {'params':>8s} {'dev ' + metric[:3]:>8s} {'test ' + metric[:3]:>9s} {'seq/s':>7s} {'train':>8s}"
    print(head)
    print("-" * len(head))
    def cell(value, width, fmt):  # a split that was not given shows as "—", not nan
        return f"{'—':>{width}s}" if value is None else f"{value:{width}{fmt}}"

    for r in rows:
        dev, test = (r.get(split, {}).get(metric) if r.get(split) else None for split in ("dev", "test"))
        print(f"{r['name']:28s} {r['parameters'] / 1e6:7.1f}M {cell(dev, 8, '.3f')} {cell(test, 9, '.3f')} "
              f"{cell(r.get('dev_seq_per_s'), 7, '.1f')} {r['train_seconds']:7.0f}s")


# One student per method (each method's demo steps come from the registry). Times for 2 CPU
# cores, numba backend (see benchmarks/RESULTS.md): the default preset takes about 20 minutes;
# --quick about 6 (measured), with the students that learn in 100 steps (every one well above the majority
# class; WID, Theseus, MiniALBERT and CompAct need the longer runs); --tiny (CI) a smoke run of
# every step; --full trains every model for 2-3 epochs at length 128.
DEMO_PRESETS = {
    "default": {"train": {"epochs": 1, "max_length": 64, "lr": 1e-4, "batch_size": 32}, "student_steps": 160,
                "data": {}, "rounds": 3},
    # quick: a 2,048-text training slice, so caching the teacher's logits is not the longest step
    "quick": {"train": {"max_steps": 120, "max_length": 48, "lr": 1e-4, "batch_size": 32}, "student_steps": 100,
              "data": {"max_train_examples": 2048, "max_eval_examples": 256}, "rounds": 3},
    "tiny": {"train": {"max_steps": 6, "max_length": 32, "lr": 1e-4, "batch_size": 16, "eval_batch_size": 32},
             "student_steps": 4, "data": {"max_train_examples": 128, "max_eval_examples": 48}, "rounds": 1},
    "full": {"train": {"epochs": 3, "max_length": 128, "lr": 5e-5, "batch_size": 32}, "student_steps": None,
             "data": {}, "rounds": 3},
}


def demo_plan(preset: str, backend: str, output_dir: str) -> list:
    """The demo's steps: ``(name, label, kind, config)``; kind is ``finetune`` or ``distill``.

    Every step writes a folder under ``output_dir``; its ``metrics.json`` is written last, so a
    folder with one is a finished artefact and a re-run skips it (if its config is unchanged)."""
    from .config_io import from_dict, merge

    p = DEMO_PRESETS[preset]
    base = dict(p["train"])
    data = {"task": "rotten_tomatoes", **p["data"]}
    teacher_dir = f"{output_dir}/teacher"
    steps = p["student_steps"]
    student_train = {**{k: v for k, v in base.items() if k not in ("epochs", "max_steps")}, "lr": 2e-4,
                     **({"max_steps": steps} if steps else {"epochs": 2})}
    model = {"path": "minilm-l6", "backend": backend}
    plan = [("teacher", "MiniLM-L6 teacher (fine-tuned)", "finetune", from_dict(FinetuneConfig, {
        "train": base, "model": model, "data": data, "output_dir": teacher_dir, "overwrite": True}))]
    ctx = DemoContext(preset, student_train, steps)
    for method in registry.methods().values():  # every method's own steps, in the registry's order
        for step in (method.demo(ctx) if method.demo else ()):
            common = {"data": data, "train": student_train, "output_dir": f"{output_dir}/{step.name}", "overwrite": True}
            if step.command == "distill":
                common.update(teacher={"path": teacher_dir, "backend": backend},
                              cache_dir=f"{output_dir}/cache/logits" if step.cache else None)
                cfg = from_dict(DistillConfig, merge(common, step.config))
            else:
                cfg = from_dict(FinetuneConfig, merge({**common, "model": model}, step.config))
            plan.append((step.name, step.label, step.command, cfg))
    return plan


def _recorded_test_accuracies(plan) -> dict:
    """Test accuracies the steps recorded in their ``metrics.json`` (measured on the same split)."""
    out = {}
    for name, _, _, cfg in plan:
        try:
            out[name] = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["test"]["accuracy"]
        except (OSError, KeyError, ValueError, TypeError):
            pass
    return out


def _finished(cfg) -> bool:
    """A step's folder holds a finished model made with this very config."""
    path = Path(cfg.output_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())["config"] == json.loads(json.dumps(to_dict(cfg)))
    except (OSError, KeyError, ValueError, TypeError):
        return False


def demo(preset: str = "default", backend: str = "numba", output_dir: str = "runs/demo", fresh: bool = False) -> int:
    """The tour: fine-tune the real MiniLM-L6 teacher on rotten_tomatoes (or reuse it), build
    one student per method (KD with attention transfer, XtremeDistil BiLSTM, WID folded,
    Theseus folded, MiniALBERT, a Compacter-tuned teacher), save each in HF format, and print
    and plot the compression report. Interrupted, it keeps every finished model; the same
    command continues where it stopped."""
    from .report import report

    if preset not in DEMO_PRESETS:
        raise ConfigError(f"demo preset must be one of {sorted(DEMO_PRESETS)}, got {preset!r}")
    from .backends import get_backend

    try:  # before the banner: a typo fails at once, not after the first step started
        get_backend(backend)
    except (KeyError, ValueError, ImportError) as e:
        raise ConfigError(f"demo --backend {backend!r}: {e}") from None
    plan = demo_plan(preset, backend, output_dir)
    print(f"minidistill demo ({preset} preset; --quick for about 6 minutes, --full for the long run); "
          f"models go to {output_dir}/")
    start = time.perf_counter()
    try:
        for name, label, kind, cfg in plan:
            if not fresh and _finished(cfg):
                print(f"== {label}: done before, reusing {cfg.output_dir}")
                continue
            print(f"== {label}")
            (finetune if kind == "finetune" else distill_run)(cfg)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished model is kept under {output_dir}/; run the same command to continue",
              file=sys.stderr)
        return 130
    from .data import Tokenizer

    p = DEMO_PRESETS[preset]
    _, _, test = load_splits(plan[0][3].data)
    teacher_dir = plan[0][3].output_dir
    deployed = _deploy_best(plan, output_dir, fresh)  # the best BERT student in int8, and under ONNX Runtime
    students = {name: load_classifier(cfg.output_dir) for name, _, _, cfg in plan[1:]}
    students.update({name: load_classifier(folder) for name, (_, folder) in deployed.items()})
    accuracies = _recorded_test_accuracies(plan)
    for name, (_, folder) in deployed.items():
        accuracies[name] = json.loads((Path(folder) / "metrics.json").read_text())["test"]["accuracy"]
    folders = {name: cfg.output_dir for name, _, _, cfg in plan}
    folders.update({name: folder for name, (_, folder) in deployed.items()})
    rep = report(students, teacher=load_classifier(teacher_dir), data=test, tokenizer=Tokenizer.from_pretrained(teacher_dir),
                 max_length=plan[0][3].train.max_length, rounds=p["rounds"], folders=folders, fold_check=False,
                 accuracies=accuracies)
    labels = {name: label for name, label, _, _ in plan}
    labels.update({name: label for name, (label, _) in deployed.items()})
    for r in rep.rows:
        r["label"] = labels[r["name"]]
    print()
    print(rep.to_text())
    rep.save_json(Path(output_dir) / "report.json")
    print(f"plot: {rep.plot(Path(output_dir) / 'report.svg')} (accuracy against size and speed; open it in a browser)")
    print(f"saved under {output_dir}/ in HF format (`minidistill info DIR` says which ones transformers reads as they "
          f"are); wall time {time.perf_counter() - start:.0f} s")
    return 0


def _deploy_best(plan, output_dir, fresh: bool) -> dict:
    """The demo's last step: the BERT student with the best dev accuracy, quantized to int8
    (dynamic, per token) and exported to ONNX (ONNX Runtime's fused int8 kernels); returns
    ``{name: (label, folder)}`` of the two (empty when no BERT student finished)."""
    from .export import export

    best, best_acc = None, -1.0
    for name, label, _, cfg in plan[1:]:
        folder = Path(cfg.output_dir)
        try:
            saved = json.loads((folder / "config.json").read_text())
            dev = json.loads((folder / "metrics.json").read_text())["dev"]["accuracy"]
        except (OSError, KeyError, ValueError, TypeError):
            continue
        if saved.get("architectures") == ["BertForSequenceClassification"] and "adapters" not in saved and dev > best_acc:
            best, best_acc = (name, label, folder), dev
    if best is None:
        return {}
    name, label, folder = best
    int8_dir, onnx_dir = Path(output_dir) / f"{name}-int8", Path(output_dir) / f"{name}-int8-onnx"
    print(f"== deploy: the best student ({label}, dev {best_acc:.4f}) in int8, then exported to ONNX")
    if fresh or not (int8_dir / "metrics.json").is_file():
        quantize_saved(folder, int8_dir, overwrite=True)
    deployed = {f"{name}-int8": (f"{label}, int8", str(int8_dir))}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        print('ONNX export left out: pip install "minidistill[onnx]" for it')
        return deployed
    if fresh or not (onnx_dir / "model.onnx").is_file():
        path = export(int8_dir, onnx_dir, int8_style="fused")
        from .data import Tokenizer
        from .train import evaluate

        model = load_classifier(onnx_dir)
        _, dev, test = load_splits(_recorded_data(int8_dir, None, ()))
        tok, length = Tokenizer.from_pretrained(int8_dir), _trained_max_length(int8_dir)
        metrics = json.loads((int8_dir / "metrics.json").read_text())
        metrics.update({"dev": evaluate(model, tok, dev, 64, length), "test": evaluate(model, tok, test, 64, length)})
        from .fileio import write_json

        write_json(onnx_dir / "metrics.json", metrics)
        print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB); test accuracy under ONNX Runtime "
              f"{metrics['test']['accuracy']:.4f}")
    deployed[f"{name}-int8-onnx"] = (f"{label}, int8, ONNX Runtime", str(onnx_dir))
    return deployed


def _trained_max_length(model_dir: str) -> int:
    """The max length a model was fine-tuned with (from its ``metrics.json``), else 128."""
    path = Path(model_dir) / "metrics.json"
    try:
        return int(json.loads(path.read_text())["config"]["train"]["max_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return 128


def evaluate_cmd(model_dir: str, split: str, overrides, max_length: int | None = None) -> int:
    """Evaluate a saved classifier on a split of the data it was trained on (any source, user
    files included; ``--data.key=value`` changes it), at the length it was trained with."""
    from .data import Tokenizer
    from .train import evaluate

    data_cfg = _recorded_data(model_dir, None, overrides)
    train, dev, test = load_splits(data_cfg)
    data = {"train": train, "dev": dev, "test": test}[split]
    if data is None:
        raise ConfigError(f"task {data_cfg.task!r} has no {split} split")
    model = load_classifier(model_dir)
    tok = Tokenizer.from_pretrained(model_dir)
    _check_model_fits(model, data, model_dir, "")
    length = max_length or _trained_max_length(model_dir)
    print(json.dumps(evaluate(model, tok, data, max_length=length), indent=2))
    return 0


def _check_model_fits(model, data, where, role: str) -> None:
    """Refuse a model whose head does not fit the data's task (kind and number of labels)."""
    from .models import head_kind

    kind, want = head_kind(model) or "sequence", data.task.kind
    who = f"{role} {where}".strip()
    if kind != want:
        raise ConfigError(f"{who} has a {kind} head but {data.task.name} is a {want} task; fine-tune it on the task first")
    have = model.config.num_labels
    if want != "qa" and have != data.task.num_labels:
        raise ConfigError(f"{who} predicts {have} labels but {data.task.name} has {data.task.num_labels}; "
                          "fine-tune it on the task first")


def quantize_saved(src, out, mode: str = "dynamic", activations: str | None = None, embeddings: bool = True,
                   calibration: int = 512, percentile: float | None = None, overwrite: bool = False,
                   announce=print) -> dict:
    """An int8 copy of the classifier saved in ``src``, written to ``out`` with its tokenizer
    and ``metrics.json`` (dev and test accuracy of both, the data it was trained on, so that
    ``evaluate``, ``report`` and ``export`` take it); returns the figures."""
    from .compress.quantize import calibration_batches, quantize
    from .data import Tokenizer
    from .fileio import write_json
    from .train import evaluate

    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ConfigError("quantize writes a new folder: OUT_DIR must differ from MODEL_DIR")
    if not overwrite and (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a saved model; pass --overwrite to replace it")
    model = load_classifier(src)
    if getattr(model.config, "extra", {}).get("quantization"):
        raise ConfigError(f"{src} is int8 already")
    tok = Tokenizer.from_pretrained(src)
    length = _trained_max_length(src)
    train, dev, test = load_splits(_recorded_data(src, None, ()))
    batches = calibration_batches(train.without_labels(), tok, 32, length, calibration) if mode == "static" else None
    q = quantize(model, mode, calibration=batches, activations=activations, embeddings=embeddings, percentile=percentile)
    result = {"quantization": {"mode": mode, "activations": activations or ("static" if mode == "static" else "per_token"),
                               "embeddings": embeddings, "calibration_examples": calibration if batches else 0,
                               "source": str(src.resolve())}}
    from .report import task_metric

    for split, data in (("dev", dev), ("test", test)):
        if data is not None:
            metric = task_metric(data)
            result[f"float_{split}"] = evaluate(model, tok, data, 64, length)
            result[split] = evaluate(q, tok, data, 64, length)
            announce(f"{split} {metric}: float {result[f'float_{split}'][metric]:.4f}  int8 {result[split][metric]:.4f}")
    try:
        recorded = json.loads((src / "metrics.json").read_text()).get("config", {})
    except (OSError, ValueError):
        recorded = {}
    result["config"] = recorded  # the data and length it was trained with: evaluate and report read them
    q.save_pretrained(out)
    tok.save_pretrained(out)
    write_json(out / "metrics.json", result)
    announce(f"saved to {out} ({_folder_mb(out):.1f} MB; the float model: {_folder_mb(src):.1f} MB)")
    return result


def quantize_cmd(args) -> int:
    """``minidistill quantize MODEL_DIR OUT_DIR``: see :func:`quantize_saved`."""
    quantize_saved(args.model_dir, args.out_dir, args.mode, args.activations, not args.no_embeddings, args.calibration,
                   args.percentile, args.overwrite)
    return 0


def export_cmd(args) -> int:
    """``minidistill export MODEL_DIR OUT_DIR [--int8]``: an ONNX file checked against the
    model under ONNX Runtime on a few sentences of its data."""
    from .data import Tokenizer
    from .export import export, run, session

    src, out = Path(args.model_dir), Path(args.out_dir)
    if not args.overwrite and (out / "model.onnx").exists():
        raise ConfigError(f"{out} already holds an exported model; pass --overwrite to replace it")
    path = export(src, out, int8=args.int8, int8_style=args.int8_style)
    tok = Tokenizer.from_pretrained(src)
    model = load_classifier(src)
    if args.int8 and not getattr(model.config, "extra", {}).get("quantization"):
        from .compress.quantize import quantize

        model = quantize(model)
    batch = tok.encode(["a quick check of the exported model", "it runs"])
    with_model = model(**batch).logits.numpy()
    with_ort = run(session(path), batch)["logits"]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); ONNX Runtime vs minidistill on two sentences: "
          f"largest logit difference {float(np.abs(with_ort - with_model).max()):.2g}")
    return 0


def _folder_mb(folder) -> float:
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file()) / 1e6


def load_classifier(model_dir):
    """A saved model of any kind minidistill writes (BERT with or without adapters, float or
    int8, with a sentence, token or QA head; a MiniALBERT; a BiLSTM student; or an ONNX export
    run by ONNX Runtime)."""
    from .models import load_model

    if (Path(model_dir) / "model.onnx").is_file() and not (Path(model_dir) / "model.safetensors").is_file():
        from .export import OnnxModel

        return OnnxModel(model_dir)  # an exported model, run by ONNX Runtime
    return load_model(model_dir)


def predict_cmd(model_dir: str, texts: list[str], context: str | None = None) -> int:
    """Print, per text, the predicted label and its probability (sentence classifiers), the
    entities found with their character spans (taggers), or the answer found in ``context``
    with its score (QA models: each text is a question)."""
    import re

    import minidistill as md
    from .data import QADataset, QAExample, TaskSpec, TokenDataset, Tokenizer, entities
    from .models import head_kind

    model = load_classifier(model_dir)
    tok = Tokenizer.from_pretrained(model_dir)
    kind = head_kind(model) or "sequence"
    length = _trained_max_length(model_dir)
    names = getattr(model.config, "id2label", None) or {}
    if kind == "qa":
        if context is None:
            raise ConfigError(f"{model_dir} answers questions: give the passage with --context")
        task = TaskSpec("predict", "question", "context", None, None, (), kind="qa", scheme="squad_v2")
        data = QADataset([QAExample(str(i), q, context) for i, q in enumerate(texts)], task, labelled=False)
        from .train import predict

        logits = predict(model, tok, data, 32, max(length, 384))
        for q, (answer, score) in zip(texts, data.predictions(logits[..., 0], logits[..., 1], tok, max(length, 384))):
            print(f"{answer or '(no answer)'}\t{score:.2f}\t{q}")
        return 0
    if context is not None:
        raise ConfigError("--context is for question-answering models")
    if kind == "token":
        spans = [[(m.start(), m.end()) for m in re.finditer(r"\S+", t)] for t in texts]
        words = [[t[a:b] for a, b in sp] for t, sp in zip(texts, spans)]
        task = TaskSpec("predict", "tokens", None, None, tuple(names.get(i, str(i)) for i in range(model.config.num_labels)),
                        (), kind="token")
        data = TokenDataset(words, None, task)
        from .train import predict

        pred = data.word_predictions(predict(model, tok, data, 32, length), tok, length)
        for text, sp, p in zip(texts, spans, pred):
            tags = [task.labels[i] for i in p]
            found = [f"{kind_}: {text[sp[a][0]:sp[b][1]]!r} [{sp[a][0]}:{sp[b][1]}]" for kind_, a, b in entities(tags)]
            print(f"{'; '.join(found) or '(no entities)'}\t{text}")
        return 0
    with md.no_grad():
        logits = model(**tok.encode(texts)).logits.numpy()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    names = names or {i: str(i) for i in range(logits.shape[1])}
    for text, p in zip(texts, probs):
        k = int(p.argmax())
        print(f"{names.get(k, k)}\t{p[k]:.3f}\t{text}")
    return 0


def info(model_dir: str, seq_len: int = 128) -> int:
    """Print what a checkpoint is: its architecture, unique and executed parameters, FLOPs
    per token, and for adapters the fraction of parameters adapter-only training trains."""
    from .models.bilstm import BiLSTMStudent
    from .models.stats import model_stats, transformers_reading
    from .report import trained_fraction_of

    model = load_classifier(model_dir)
    cfg = model.config
    if isinstance(model, BiLSTMStudent):
        print(f"{model_dir}: XtremeDistil BiLSTM student, {cfg.num_layers} layer(s) of {cfg.hidden_size} units per "
              f"direction, embeddings {cfg.embedding_size}, vocab {cfg.vocab_size}")
    else:
        kind = "MiniALBERT" if cfg.MODEL_TYPE == "minialbert" else "BERT"
        depth = f"{cfg.num_hidden_layers} repeats of one shared layer" if kind == "MiniALBERT" else f"{cfg.num_hidden_layers} layers"
        emb = f", embeddings {cfg.embedding_size} → {cfg.hidden_size}" if kind == "MiniALBERT" else ""
        print(f"{model_dir}: {kind}, {depth}, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
              f"FFN {cfg.intermediate_size}, vocab {cfg.vocab_size}{emb}")
    st = model_stats(model, seq_len)
    readable, why = transformers_reading(model)
    print(f"transformers: {'yes' if readable else 'no'} — {why}")
    print(f"parameters: {st['unique_parameters']:,} unique, {st['executed_parameters']:,} executed per forward pass")
    print(f"FLOPs per token (forward, sequence length {seq_len}): {st['flops_per_token']:,}")
    if st["adapter_parameters"]:
        total = st["unique_parameters"]
        fraction = trained_fraction_of(model)
        print(f"adapters: {st['adapter_parameters']:,} parameters ({st['adapter_parameters'] / total:.3%} of the model); "
              f"adapter-only training trains {round(fraction * total):,} ({fraction:.3%}) with the LayerNorms and the task head")
    return 0


def _recorded_data(model_dir, task: str | None, overrides=()) -> DataSection:
    """The data section a saved model was trained with (its ``metrics.json``; every source,
    user files included), then ``--task`` and ``--data.key=value`` overrides."""
    from .config_io import from_dict, merge, parse_overrides

    try:
        recorded = json.loads((Path(model_dir) / "metrics.json").read_text())["config"]["data"]
    except (OSError, KeyError, ValueError, TypeError):
        recorded = {}
    table = merge(recorded, {"task": task} if task else {})
    table = merge(table, parse_overrides(overrides).get("data", {}))
    return from_dict(DataSection, table, "data.")


def report_cmd(args, overrides=()) -> int:
    """``minidistill report``: every saved model found, measured beside the teacher."""
    from .data import Tokenizer
    from .report import report, saved_models

    found = saved_models(args.paths)
    teacher_dir = Path(args.teacher) if args.teacher else found.pop("teacher", None)
    if args.teacher:
        found = {k: v for k, v in found.items() if Path(v).resolve() != teacher_dir.resolve()}
    if not found:
        raise FileNotFoundError("no student to report (only the teacher was found)")
    ref = teacher_dir or next(iter(found.values()))
    data_cfg = _recorded_data(ref, args.task, overrides)
    _, dev, test = load_splits(data_cfg)
    data = test if args.split == "test" else dev
    if data is None:
        raise ConfigError(f"the data of {ref} ({data_cfg.task}) has no {args.split} split; give it with "
                          f"--data.{args.split}_file=… or --data.task=…")
    if args.limit:
        data = data.select(range(min(args.limit, len(data))))
    tok = Tokenizer.from_pretrained(ref)
    teacher = load_classifier(teacher_dir) if teacher_dir else None
    students = {name: load_classifier(folder) for name, folder in found.items()}
    folders = {**found, **({"teacher": teacher_dir} if teacher_dir else {})}
    rep = report(students, teacher=teacher, data=data, tokenizer=tok, split=args.split,
                 max_length=args.max_length or _trained_max_length(ref), rounds=args.rounds, folders=folders)
    if args.json == "-":
        print(rep.to_json())
    else:
        print(rep.to_text())
        if args.json:
            rep.save_json(args.json)
    if args.plot:
        print(f"plot: {rep.plot(args.plot)}")
    return 0


def mlm_head_cmd(args) -> int:
    """``minidistill mlm-head MODEL --corpus FILES``: fit a masked-LM head to the frozen encoder
    of MODEL on raw text; print masked accuracy and perplexity on held-out text before and after;
    save the ``BertForMaskedLM`` with its tokenizer and ``metrics.json``."""
    import minidistill as md
    from .data import CORPORA, CorpusCache, MaskingCollator, PackedCorpus, Tokenizer
    from .data.corpus import held_out_split
    from .fileio import write_json
    from .models import BertForMaskedLM
    from .train import TrainConfig
    from .train.mlm import evaluate_masked_lm, fit_mlm_head

    path = _model_path(args.model, "model")
    out = Path(args.output_dir)
    if (out / "config.json").exists() and not args.overwrite:
        raise ConfigError(f"{out} already holds a saved model; pass --overwrite to replace it")
    tok = Tokenizer.from_pretrained(path)
    cache_root = Path(args.cache_dir)
    if args.held_out is None:
        args.held_out = held_out_split(args.corpus)
        if args.held_out is None:
            raise ConfigError("--held-out is required unless --corpus is one named corpus "
                              f"({', '.join(CORPORA)}), whose held-out split is then used")
    train = PackedCorpus(CorpusCache.build(cache_root / "train", tok, args.corpus), tok, args.seq_len,
                         masking=MaskingCollator(tok, whole_word=args.whole_word, seed=0))
    held = PackedCorpus(CorpusCache.build(cache_root / "held-out", tok, args.held_out), tok, args.seq_len,
                        masking=MaskingCollator(tok, whole_word=args.whole_word, seed=12345))
    md.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(path, backend=args.backend)
    fresh = model.loading_info["newly_initialized"]
    print(f"{args.model}: {'a fresh head (the checkpoint has none)' if fresh else 'its own head'}; "
          f"{len(train)} training sequences of {args.seq_len}, {len(held)} held out")
    before = evaluate_masked_lm(model, tok, held, 32, args.seq_len)
    print(f"before: masked accuracy {before['masked_accuracy']:.4f}, perplexity {before['perplexity']:.1f}")
    fit_mlm_head(model, tok, train, TrainConfig(lr=args.lr, max_steps=args.steps, batch_size=args.batch_size,
                                                max_length=args.seq_len, progress=None))
    after = evaluate_masked_lm(model, tok, held, 32, args.seq_len)
    print(f"after:  masked accuracy {after['masked_accuracy']:.4f}, perplexity {after['perplexity']:.1f}")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_json(out / "metrics.json", {"before": before, "after": after, "steps": args.steps, "source": str(path),
                                      "corpus": [str(p) for p in args.corpus], "held_out": [str(p) for p in args.held_out]})
    print(f"saved to {out}")
    return 0


def course_cmd(args) -> int:
    """``minidistill course build|grade``."""
    if args.course_command == "build":
        res = course.build(args.out, args.module, keep_earlier=args.keep_earlier, source=args.source, force=args.force)
        print(f"wrote {res['out']}: modules {res['modules']}, {res['files']} files; "
              f"tasks to do: {', '.join(res['hollowed']) or 'none'}")
        return 0
    res = course.grade(args.dir, timeout=args.timeout, tasks=args.task)
    if args.json == "-":
        print(grading.dumps(res))
        return 0
    print(course.format_table(res))
    if args.json:
        grading.write_json(res, args.json)
    return 0


_CONFIG_PAGE = """# Configuration reference

Generated from the config dataclasses and the registry of methods by
`minidistill config all --markdown > docs/configuration.md` (a test checks that this page is
current). On the command line every key is written `--section.key=value`; in a TOML file
(`--config run.toml`) as `key = value` under `[section]`. `minidistill finetune --help` and
`minidistill distill --help` print the same lists.

## Methods

Each registered method (see [Architecture](architecture.md)): student methods are chosen with
`distill --student.kind=NAME` and read their own section; adapter methods with
`finetune --adapters=NAME`; a training method is switched on by giving any key of its section.

"""


def config_reference(what: str, markdown: bool = False) -> str:
    """``minidistill config finetune|distill|methods|all``: every config key with its default and
    meaning, or the registered methods, as text or Markdown (``all``: the page
    ``docs/configuration.md``, Markdown only)."""
    if what == "all":  # the whole of docs/configuration.md
        presets = ["## Presets", "", "Named recipes, each the measured one (`benchmarks/RESULTS.md`): "
                   "`--preset NAME`, then the TOML file and the overrides change what they set.", "",
                   "| command | preset | what it gives |", "| --- | --- | --- |"]
        presets += [f"| {cmd} | `{name}` | {about} |" for cmd in PRESETS for name, (about, _) in PRESETS[cmd].items()]
        return _CONFIG_PAGE + "\n".join([config_reference("methods", True), "", *presets, "",
                                          config_reference("finetune", True), config_reference("distill", True),
                                          config_reference("general", True)])
    if what == "methods":
        rows = [(m.name, m.role, m.summary) for m in registry.methods().values()]
        if markdown:
            return "\n".join(["| method | role | what it does |", "| --- | --- | --- |"] +
                              [f"| `{n}` | {r} | {s} |" for n, r, s in rows])
        return "\n".join(f"{n:24s} {r:9s} {s}" for n, r, s in rows)
    cls = {"finetune": FinetuneConfig, "distill": DistillConfig, "general": GeneralConfig}[what]
    return help_markdown(cls, f"minidistill {what}") if markdown else help_text(cls)


def _print_run(cfg, result: dict) -> None:
    """The one-row summary of a finished ``finetune`` / ``distill`` run (rank 0 only)."""
    if distributed.is_main():
        print_table([{**result, "name": Path(cfg.output_dir).name}],
                    (result.get("dev") and next(iter(result["dev"]))) or "accuracy")
        print(f"saved to {result['output_dir']}")


def main(argv=None) -> int:
    """Entry point of the ``minidistill`` console script."""
    parser = argparse.ArgumentParser(prog="minidistill", description="Compress BERT-style transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="fine-tune the real MiniLM-L6 teacher on rotten_tomatoes")
    size = p_demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about 6 minutes on 2 cores: the students that learn fast")
    size.add_argument("--full", action="store_true", help="every model trained for epochs, length 128")
    size.add_argument("--tiny", action="store_true", help="a smoke run in well under a minute (CI)")
    p_demo.add_argument("--fresh", action="store_true", help="redo every step, even finished ones")
    p_demo.add_argument("--backend", default="numba", help="numpy, numba, torch or torch:cuda")
    p_demo.add_argument("--output-dir", default="runs/demo")
    keys = "presets (--preset NAME; measured recipes):\n{2}\n\nevery key, its default and meaning (also: " \
           "minidistill config {0}):\n\n{1}"
    wants_help = any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv))

    def epilog(cmd, cls):  # generated from the dataclasses, only when help is asked for (it reads their source)
        return keys.format(cmd, help_text(cls), _preset_lines(cmd)) if wants_help else None

    p_ft = sub.add_parser("finetune", help="fine-tune a BERT on a task (config + --section.key=value overrides)",
                          formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog("finetune", FinetuneConfig))
    p_di = sub.add_parser("distill", help="distil a fine-tuned teacher into a student (config + overrides)",
                          formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog("distill", DistillConfig))
    p_ge = sub.add_parser("general", help="task-agnostic distillation on raw text (masked LM; config + overrides)",
                          formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog("general", GeneralConfig))
    for p_run, cmd in ((p_ft, "finetune"), (p_di, "distill"), (p_ge, "general")):
        p_run.add_argument("--config", default=None, help="a TOML file")
        p_run.add_argument("--preset", default=None, choices=sorted(PRESETS[cmd]),
                           help="start from a named, measured recipe (the TOML file and overrides change it)")
    p_cfg = sub.add_parser("config", help="list the keys of finetune / distill, or the registered methods")
    p_cfg.add_argument("what", choices=["finetune", "distill", "general", "methods", "all"])
    p_cfg.add_argument("--markdown", action="store_true", help="a Markdown table (the docs page is made this way)")
    p_ev = sub.add_parser("evaluate", help="evaluate a saved classifier")
    p_ev.add_argument("model_dir")
    p_ev.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p_ev.add_argument("--max-length", type=int, default=None, help="default: the length used in training")
    p_pr = sub.add_parser("predict", help="classify texts, tag their entities, or answer questions with a saved model")
    p_pr.add_argument("model_dir")
    p_pr.add_argument("--text", action="append", required=True, help="a text (a question for QA models); repeatable")
    p_pr.add_argument("--context", default=None, help="QA models: the passage the questions are about")
    p_q = sub.add_parser("quantize", help="an int8 copy of a saved classifier (post-training quantization)")
    p_q.add_argument("model_dir")
    p_q.add_argument("out_dir")
    p_q.add_argument("--mode", default="dynamic", choices=["dynamic", "static"],
                     help="dynamic: activation scales at run time; static: calibrated once")
    p_q.add_argument("--activations", default=None, choices=["per_token", "per_tensor"],
                     help="dynamic: one activation scale per token (default) or per tensor")
    p_q.add_argument("--no-embeddings", action="store_true", help="keep the embedding tables in float")
    p_q.add_argument("--calibration", type=int, default=512, help="static: training examples to calibrate on")
    p_q.add_argument("--percentile", type=float, default=None,
                     help="static: calibrate to this percentile of per-token maxima (default: the max)")
    p_q.add_argument("--overwrite", action="store_true", help="replace a model saved in OUT_DIR")
    p_x = sub.add_parser("export", help="export a saved BERT model to ONNX (float or int8)")
    p_x.add_argument("model_dir")
    p_x.add_argument("out_dir")
    p_x.add_argument("--int8", action="store_true", help="quantize a float model first (dynamic, per token)")
    p_x.add_argument("--int8-style", default="exact", choices=["exact", "fused"],
                     help="exact: our int8 arithmetic in standard operators; fused: ONNX Runtime's int8 kernel")
    p_x.add_argument("--overwrite", action="store_true", help="replace a model exported to OUT_DIR before")
    p_info = sub.add_parser("info", help="describe a checkpoint folder")
    p_info.add_argument("model_dir")
    p_info.add_argument("--seq-len", type=int, default=128, help="sequence length for FLOPs per token")
    p_rep = sub.add_parser("report", help="the compression report of saved models against their teacher")
    p_rep.add_argument("paths", nargs="+", help="model folders, or folders of model folders (e.g. runs/demo)")
    p_rep.add_argument("--teacher", default=None, help="the teacher's folder (default: a model named 'teacher')")
    p_rep.add_argument("--task", default=None, help="data task (default: the data the teacher was trained on; "
                                                    "--data.key=value changes any of it)")
    p_rep.add_argument("--split", default="test", choices=["dev", "test"])
    p_rep.add_argument("--max-length", type=int, default=None, help="default: the length the teacher was trained with")
    p_rep.add_argument("--limit", type=int, default=None, help="evaluate on the first N examples only")
    p_rep.add_argument("--rounds", type=int, default=5,
                       help="interleaved speed rounds (up to 3× as many while the machine is busy)")
    p_rep.add_argument("--json", default=None, help="write the report as JSON to this file ('-': print it)")
    p_rep.add_argument("--plot", default=None, help="write accuracy vs parameters / speed to this image")
    p_mh = sub.add_parser("mlm-head", help="fit a masked-LM head to a frozen encoder on raw text (checkpoints without one)")
    p_mh.add_argument("model", help="an asset name (minilm-l6) or a checkpoint folder")
    p_mh.add_argument("--corpus", nargs="+", required=True,
                      help="text / JSON-lines files or folders to train on, or a named corpus (debian-docs)")
    p_mh.add_argument("--held-out", nargs="+", default=None,
                      help="text to score masked accuracy and perplexity on (default: a named corpus's valid split)")
    p_mh.add_argument("--steps", type=int, default=500)
    p_mh.add_argument("--lr", type=float, default=1e-3)
    p_mh.add_argument("--batch-size", type=int, default=32)
    p_mh.add_argument("--seq-len", type=int, default=128)
    p_mh.add_argument("--whole-word", action="store_true", help="mask whole words")
    p_mh.add_argument("--backend", default="numba", choices=["numpy", "numba", "torch"])
    p_mh.add_argument("--cache-dir", default="runs/corpus-cache", help="where the tokenised corpora are kept")
    p_mh.add_argument("--output-dir", default="runs/mlm-head")
    p_mh.add_argument("--overwrite", action="store_true")
    p_course = sub.add_parser("course", help="build student copies of the course and grade them")
    csub = p_course.add_subparsers(dest="course_command", required=True)
    p_cb = csub.add_parser("build", help="write a student copy with the tasks of modules 0..N hollowed out")
    p_cb.add_argument("out")
    p_cb.add_argument("--module", type=int, default=max(m.number for m in course.MODULES),
                      help="the last module included (default: all)")
    p_cb.add_argument("--keep-earlier", action="store_true", help="keep the modules before --module solved")
    p_cb.add_argument("--source", default=None, help="the repository checkout (default: this package's)")
    p_cb.add_argument("--force", action="store_true", help="replace an existing OUT")
    p_cg = csub.add_parser("grade", help="run each task's tests against a student copy and print the scores")
    p_cg.add_argument("dir")
    p_cg.add_argument("--timeout", type=float, default=120.0, help="seconds allowed to each task")
    p_cg.add_argument("--task", action="append", default=None, help="grade only this task (repeatable)")
    p_cg.add_argument("--json", default=None, help="also write the scores as JSON to this file ('-': stdout only)")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "finetune":
            cfg = load_config(FinetuneConfig, args.config, rest, base=_preset("finetune", args.preset))
            _print_run(cfg, finetune(cfg))
            return 0
        if args.command == "distill":
            cfg = load_config(DistillConfig, args.config, rest, base=_preset("distill", args.preset))
            _print_run(cfg, distill_run(cfg))
            return 0
        if args.command == "general":
            cfg = load_config(GeneralConfig, args.config, rest, base=_preset("general", args.preset))
            result = general_run(cfg)
            if distributed.is_main():
                for who, key in (("student", "held_out_mlm"), ("teacher", "teacher_held_out_mlm")):
                    if key in result:
                        m = result[key]
                        print(f"{who}: held-out masked accuracy {m['masked_accuracy']:.4f}, perplexity "
                              f"{m['perplexity']:.1f} ({m['masked_tokens']} masked tokens)")
                print(f"{result['parameters'] / 1e6:.1f}M parameters, {result['steps']} steps in "
                      f"{_duration(result['train_seconds'])}; saved to {result['output_dir']}")
            return 0
        if args.command in ("evaluate", "report") and any(not a.startswith("--data.") for a in rest):
            parser.error(f"{args.command} takes --data.key=value overrides only, got {' '.join(rest)}")
        if args.command == "evaluate":
            return evaluate_cmd(args.model_dir, args.split, rest, args.max_length)
        if args.command == "report":
            return report_cmd(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "demo":
            preset = "quick" if args.quick else "full" if args.full else "tiny" if args.tiny else "default"
            return demo(preset, args.backend, args.output_dir, args.fresh)
        if args.command == "mlm-head":
            return mlm_head_cmd(args)
        if args.command == "predict":
            return predict_cmd(args.model_dir, args.text, args.context)
        if args.command == "quantize":
            return quantize_cmd(args)
        if args.command == "export":
            return export_cmd(args)
        if args.command == "course":
            return course_cmd(args)
        if args.command == "config":
            print(config_reference(args.what, args.markdown or args.what == "all"), end="\n" if args.what != "all" else "")
            return 0
        return info(args.model_dir, args.seq_len)
    except (ConfigError, course.CourseError, FloatingPointError, FileNotFoundError, ValueError, KeyError, ImportError, RuntimeError) as e:
        print(f"minidistill: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
