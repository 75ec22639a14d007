"""``distill``: train a student to match a teacher with any mix of objectives, on the Trainer.

    student = make_student(teacher, num_layers=2, init="lower")
    distill(teacher, student, tokenizer, train, dev,
            objectives=[SoftKD(temperature=2), AttentionKL(LayerMap.build("uniform", 2, 6, "attention"))],
            task_weight=0.5, config=TrainConfig(lr=1e-4, epochs=1))

Each step the teacher runs once without a tape (its outputs are constants), the student runs
with the outputs the objectives need, and the loss is ``Σ objectives + task_weight · CE``
(the task term needs labels; unlabelled transfer data uses objectives only). Objectives'
own parameters (width projections) are trained with the student's.
"""

from __future__ import annotations

from ..core.tensor import no_grad
from ..train.optim import param_groups
from ..train.trainer import TrainConfig, Trainer
from .kd import needed_outputs, total_loss


def distill(teacher, student, tokenizer, train_data, eval_data=None, objectives=(), task_weight: float = 0.0,
            config: TrainConfig | None = None, callbacks=None) -> Trainer:
    """Distil ``teacher`` into ``student``; returns the finished :class:`Trainer`."""
    objectives = list(objectives)
    if not objectives and not task_weight:
        raise ValueError("distill needs at least one objective or a task_weight > 0")
    if task_weight and train_data.labels is None:
        raise ValueError("task_weight > 0 needs labelled training data")
    if teacher.backend is not student.backend:
        raise ValueError(f"teacher and student must share a backend ({teacher.backend.name} vs {student.backend.name})")
    config = config or TrainConfig()
    flags = needed_outputs(objectives)
    teacher.eval()
    for obj in objectives:  # learned parts live where the student lives
        if list(obj.parameters()):
            obj.to(student.backend, dtype=next(student.parameters()).dtype.name)

    def compute_loss(model, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with no_grad():
            t_out = teacher(**inputs, **flags)
        labels = batch.get("labels") if task_weight else None
        s_out = model(**inputs, labels=labels, **flags)
        loss = total_loss(objectives, s_out, t_out, batch) if objectives else None
        if task_weight:
            task = s_out.loss * task_weight
            loss = task if loss is None else loss + task
        return loss

    params = param_groups(student, config.weight_decay)
    for obj in objectives:
        extra = [p for p in obj.parameters() if p.requires_grad]
        if extra:
            params.append({"params": extra, "weight_decay": config.weight_decay})
    trainer = Trainer(student, tokenizer, train_data, eval_data, config, compute_loss=compute_loss,
                      parameters=params if config.optimizer == "adamw" else None, callbacks=callbacks)
    trainer.train()
    return trainer
