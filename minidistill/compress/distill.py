"""``distill``: train a student to match a teacher with any mix of objectives, on the Trainer,
in one stage or in several (XtremeDistil's staged recipe with gradual unfreezing).

    student = make_student(teacher, num_layers=2, init="lower")
    distill(teacher, student, tokenizer, train, dev,
            objectives=[SoftKD(temperature=2), AttentionKL(LayerMap.build("uniform", 2, 6, "attention"))],
            task_weight=0.5, config=TrainConfig(lr=1e-4, epochs=1))

Each step the teacher runs once without a tape (its outputs are constants), the student runs
with the outputs the objectives need, and the loss is ``Σ objectives + task_weight · CE``
(the task term needs labels; unlabelled transfer data uses objectives only). Objectives'
own parameters (width projections, the combine map) are trained with the student's.

With ``cache_dir``, the teacher's logits, pooled output and the hidden states the objectives
read are computed once per dataset into a memory-mapped :class:`~minidistill.data.TeacherCache`
(resumable, refused when stale) and looked up by example id; stages whose objectives read
attention maps run the teacher live.

With ``stages``, each :class:`Stage` is a run of its own: its objectives, its data (the
unlabelled transfer set or the labelled training set) and, with ``unfreeze=True``, gradual
unfreezing from the top: one phase per group of ``student.layer_groups()``, phase k training
the top k groups with the rest frozen (no gradient is computed for frozen weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..core.tensor import Tensor, autocast, no_grad
from ..fileio import write_json
from ..data.cache import TeacherCache, data_fingerprint
from ..data.datasets import model_inputs
from ..models.bert import ModelOutput, head_inputs
from ..train import distributed
from ..train.optim import param_groups
from ..train.trainer import TrainConfig, Trainer, has_checkpoint, restore_model
from .kd import needed_outputs, objective_terms


#: written into a phase's checkpoint folder when the phase is done (its log entry)
FINISHED = "finished.json"


@dataclass
class Stage:
    """One stage of a staged distillation.

    Attributes:
        name: shown in logs and used for checkpoint sub-folders.
        objectives: distillation objectives of this stage.
        task_weight: weight of the cross-entropy on labels (needs ``data="train"``).
        data: ``"transfer"`` (the unlabelled transfer set; the training texts when none is
            given) or ``"train"`` (the labelled training set).
        unfreeze: gradual unfreezing from the top, one phase per layer group.
        config: this stage's training settings (default: ``distill``'s ``config``).
        evaluate: evaluate on the dev set and keep the best weights (off for stages whose
            objective says nothing about the classifier, such as representation matching).
    """

    name: str
    objectives: list = field(default_factory=list)
    task_weight: float = 0.0
    data: str = "transfer"
    unfreeze: bool = False
    config: TrainConfig | None = None
    evaluate: bool = True

    def __post_init__(self):
        if self.data not in ("transfer", "train"):
            raise ValueError(f"stage {self.name!r}: data must be 'transfer' or 'train', got {self.data!r}")
        if not self.objectives and not self.task_weight:
            raise ValueError(f"stage {self.name!r} needs at least one objective or a task_weight > 0")
        if self.task_weight and self.data != "train":
            raise ValueError(f"stage {self.name!r}: a task loss needs labelled data (data='train')")


def distill(teacher, student, tokenizer, train_data, eval_data=None, objectives=(), task_weight: float = 0.0,
            config: TrainConfig | None = None, callbacks=None, stages=None, transfer_data=None,
            cache_dir=None, resume: bool = False) -> Trainer:
    """Distil ``teacher`` into ``student``; returns the last :class:`Trainer`, whose
    ``stage_log`` lists every stage and phase run (steps, trained groups, dev metrics).

    Args:
        teacher: the teacher model (only run, never trained).
        student: the student model, on the teacher's backend.
        tokenizer: shared by both models.
        train_data: labelled training set (or unlabelled transfer data for objective-only runs).
        eval_data: dev set for evaluation, early stopping and keeping the best weights.
        objectives: the objectives of a single-stage run (ignored when ``stages`` is given).
        task_weight: the weight of the task loss on labels in a single-stage run.
        config: training settings (epochs, lr, batch size, max length …).
        stages: a list of :class:`Stage` for a staged run.
        transfer_data: unlabelled texts for ``"transfer"`` stages (default: ``train_data``'s texts).
        cache_dir: folder for teacher-output caches (None: run the teacher every step).
        resume: continue a killed run from ``config.checkpoint_dir``: phases it finished are
            skipped (each ends with a checkpoint and a ``finished.json``), the phase in progress
            continues from its latest checkpoint, and the result is the uninterrupted run's.
    """
    config = config or TrainConfig()
    if teacher.backend is not student.backend:
        raise ValueError(f"teacher and student must share a backend ({teacher.backend.name} vs {student.backend.name})")
    if stages is None:
        if not objectives and not task_weight:
            raise ValueError("distill needs at least one objective or a task_weight > 0")
        if task_weight and train_data.labels is None:
            raise ValueError("task_weight > 0 needs labelled training data")
        stages = [Stage("distill", list(objectives), task_weight, data="train", config=config)]
        datasets = {"train": train_data}
    else:
        if objectives or task_weight:
            raise ValueError("give either objectives / task_weight or stages, not both")
        if any(s.data == "train" for s in stages) and train_data.labels is None:
            raise ValueError("a stage on data='train' needs labelled training data")
        datasets = {"train": train_data,
                    "transfer": transfer_data if transfer_data is not None else train_data.without_labels()}
    if resume and config.checkpoint_dir is None:
        raise ValueError("resume needs config.checkpoint_dir (where the killed run wrote its checkpoints)")
    teacher.eval()
    log, trainer, finished = [], None, None
    for stage in stages:
        cfg = stage.config or config
        data = datasets[stage.data]
        lookup = _teacher_outputs(teacher, tokenizer, data, stage.objectives, cfg, cache_dir)
        groups = student.layer_groups() if stage.unfreeze else [("all", [student])]
        for phase in range(1, len(groups) + 1):
            trained = [m for _, ms in groups[:phase] for m in ms] if stage.unfreeze else [student]
            student.requires_grad_(False)
            for m in trained:
                m.requires_grad_(True)
            phase_cfg = cfg
            if cfg.checkpoint_dir is not None:
                sub = f"{stage.name}-{phase}" if stage.unfreeze else stage.name
                phase_cfg = dataclasses.replace(cfg, checkpoint_dir=str(Path(cfg.checkpoint_dir) / sub))
            if not stage.evaluate:
                phase_cfg = dataclasses.replace(phase_cfg, load_best_at_end=False, eval_every=None,
                                                early_stopping_patience=None)
            where = Path(phase_cfg.checkpoint_dir) if phase_cfg.checkpoint_dir is not None else None
            if resume and where is not None and (where / FINISHED).is_file():  # done before the run was killed
                log.append(json.loads((where / FINISHED).read_text()))
                finished = where
                continue
            if resume and finished is not None and not (where is not None and has_checkpoint(where)):
                restore_model(student, finished)  # a new phase starts where the finished one ended
            trainer = _run(teacher, student, tokenizer, data, eval_data if stage.evaluate else None, stage,
                           phase_cfg, callbacks, lookup, resume=resume and where is not None and has_checkpoint(where))
            entry = {"stage": stage.name, "phase": phase, "trained": [n for n, _ in groups[:phase]],
                     "steps": trainer.state.step,
                     "eval": trainer.state.history[-1] if trainer.state.history else None,
                     "best": trainer.state.best_metric}
            log.append(entry)
            if where is not None:  # the phase's end: its final state, and a mark that it is done
                trainer.save_checkpoint()
                if distributed.is_main():
                    write_json(where / FINISHED, entry)
                distributed.barrier()
                finished = where
        student.requires_grad_(True)
    if trainer is None:  # every phase had finished before: the student as the last one left it
        restore_model(student, finished)
        trainer = Trainer(student, tokenizer, datasets[stages[-1].data], eval_data, stages[-1].config or config)
    trainer.stage_log = log
    return trainer


def _run(teacher, student, tokenizer, data, eval_data, stage: Stage, cfg: TrainConfig, callbacks, lookup,
         resume: bool = False) -> Trainer:
    objectives = list(stage.objectives)
    flags = needed_outputs(objectives)
    for obj in objectives:  # learned parts live where the student lives
        if list(obj.parameters()):
            obj.to(student.backend, dtype=next(student.parameters()).dtype.name)
    task_weight = stage.task_weight

    names = _term_names(objectives)

    def compute_loss(model, batch):
        """The weighted sum, and each weighted term for the log (``terms``)."""
        inputs = model_inputs(batch)
        t_out = lookup(batch) if objectives else None
        targets = {"labels": batch.get("labels")} if task_weight else {}  # a bare encoder takes no labels
        s_out = model(**inputs, **targets, **head_inputs(model, batch), **flags)
        parts = objective_terms(objectives, s_out, t_out, batch)
        terms = {name: part.item() for name, part in zip(names, parts)}
        loss = None
        for part in parts:
            loss = part if loss is None else loss + part
        if task_weight:
            task = s_out.loss * task_weight
            terms["task"] = task.item()
            loss = task if loss is None else loss + task
        return loss, terms

    params = param_groups(student, cfg.weight_decay)
    for obj in objectives:
        extra = [p for p in obj.parameters() if p.requires_grad]
        if extra:
            params.append({"params": extra, "weight_decay": cfg.weight_decay})
    params = [g for g in params if g["params"]]
    trainer = Trainer(student, tokenizer, data, eval_data, cfg, compute_loss=compute_loss,
                      parameters=params if cfg.optimizer == "adamw" else None, callbacks=callbacks)
    if resume:
        trainer.resume()
    trainer.train()
    return trainer


def _term_names(objectives) -> list[str]:
    """A log name per objective (its ``name``, numbered when one repeats)."""
    base = [getattr(o, "name", type(o).__name__) for o in objectives]
    return [b if base.count(b) == 1 else f"{b}.{base[:i].count(b)}" for i, b in enumerate(base)]


def _teacher_outputs(teacher, tokenizer, data, objectives, cfg: TrainConfig, cache_dir):
    """``f(batch) -> teacher outputs``: from a cache when one can serve the objectives, else live."""
    flags = needed_outputs(objectives)
    live_only = flags["output_attentions"] or flags["output_attention_scores"] or flags["output_qkv"]
    masked = getattr(data, "masking", None) is not None  # inputs masked afresh each step: nothing to cache
    if cache_dir is None or live_only or masked or not hasattr(data, "texts"):
        def live(batch):
            with no_grad():
                return teacher(**model_inputs(batch), **head_inputs(teacher, batch), **flags)
        return live
    hidden = sorted({j for obj in objectives if "hidden_states" in obj.needs for _, j in obj.layer_map.pairs})
    precision = cfg.precision if cfg.precision_eval else "fp32"  # a bf16 cache never serves an fp32 run
    ident = f"{data_fingerprint(data, cfg.max_length)}-{hidden}" + ("" if precision == "fp32" else f"-{precision}")
    key = hashlib.sha1(ident.encode()).hexdigest()[:16]
    # built once, by the first process of a data-parallel run; the others open it when it is done
    if distributed.is_main():
        with autocast(cfg.autocast_dtype if cfg.precision_eval else None):
            cache = TeacherCache.build(Path(cache_dir) / key, teacher, tokenizer, data, cfg.max_length, hidden,
                                       batch_size=cfg.eval_batch_size)
    distributed.barrier()
    if not distributed.is_main():
        cache = TeacherCache.build(Path(cache_dir) / key, teacher, tokenizer, data, cfg.max_length, hidden,
                                   batch_size=cfg.eval_batch_size)
    cache.check(teacher, data, cfg.max_length)
    n_states = teacher.config.num_hidden_layers + 1
    ops = teacher.backend

    def cached(batch):
        got = cache.lookup(batch["example_ids"], width=batch["input_ids"].shape[1])
        wrap = lambda a: None if a is None else Tensor._wrap(ops.asarray(a), ops)  # noqa: E731
        states = None
        if hidden:
            states = [wrap(got["hidden_states"][i]) if i in got["hidden_states"] else None for i in range(n_states)]
        return ModelOutput(logits=wrap(got["logits"]), pooler_output=wrap(got["pooler_output"]), hidden_states=states)
    return cached
