"""The Trainer: one training loop that every method in minidistill reuses.

minGPT-style: a small loop, a config dataclass, and callbacks registered per event
(``on_step_end``, ``on_evaluate``, ``on_train_end``) for everything else. A method changes
what is optimised by passing ``compute_loss(model, batch) -> Tensor`` (distillation adds its
teacher there) and which parameters by passing ``parameters``.

Each step: forward, loss, backward, gradient clipping, optimizer and schedule step. A step
is one global batch of ``batch_size`` examples whatever runs it: ``grad_accum_steps``
micro-batches in turn and, under ``torchrun``, a share of the rows on each of several
processes (:mod:`minidistill.train.distributed`); each part's loss is weighted by its share
of the batch's examples, so the update is exactly the big batch's. ``precision`` runs the
matrix products in bf16 / fp16 on float32 master weights (``core.autocast``), with dynamic
loss scaling for fp16. Every step is appended to a JSON-lines log; evaluation runs every ``eval_every`` steps and at the
end, with the task's metrics; early stopping watches a dev metric. Training checkpoints
(model, optimizer, schedule, random states, position in the epoch) are written atomically
and :meth:`Trainer.resume` continues a killed run to bit-identical parameters on the CPU
backends.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.tensor import autocast, no_grad, on_grad_ready
from ..data.datasets import model_inputs, split_rows, take_rows
from ..fileio import (CheckpointError, alias_metadata, atomic_path, load_weights, save_weights, unique_tensors,
                      write_json)
from . import distributed
from . import metrics as metrics_mod
from .optim import SGD, AdamW, param_groups
from .schedules import Schedule, clip_grad_norm


#: ``train.precision`` → the dtype of the matrix products under ``autocast``
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (defaults: BERT fine-tuning practice)."""

    lr: float = 5e-5  # peak learning rate (the schedule scales it)
    weight_decay: float = 0.01  # decoupled weight decay (biases and LayerNorms get none)
    optimizer: str = "adamw"  # adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decay rates
    eps: float = 1e-8  # AdamW's denominator term
    momentum: float = 0.0  # SGD's momentum
    batch_size: int = 32  # examples per optimiser step (in all: split among micro-batches and processes)
    grad_accum_steps: int = 1  # micro-batches per optimiser step (the same update in less memory)
    precision: str = "fp32"  # fp32 | bf16 | fp16: matrix products in that precision, float32 master weights (torch backend)
    precision_eval: bool = False  # evaluate (and build the teacher cache) in the training precision too
    loss_scale: float = 65536.0  # fp16: the initial dynamic loss scale
    loss_scale_window: int = 2000  # fp16: double the loss scale after this many steps without overflow
    eval_batch_size: int = 64  # examples per evaluation batch
    epochs: int = 1  # passes over the training set (unless max_steps is set)
    max_steps: int | None = None  # optimiser steps to run (overrides epochs)
    warmup_ratio: float = 0.1  # share of the steps that warm the learning rate up from 0
    schedule: str = "linear"  # linear | cosine | constant, after the warmup
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this (none: no clipping)
    max_length: int = 128  # tokens per sequence (longer texts are cut; tagging and QA examples are split into windows)
    seed: int = 0  # shuffling, dropout and initialisation seed
    eval_every: int | None = None  # evaluate on dev every N steps (and at the end)
    metric: str | None = None  # the dev metric that picks the best state (default: the task's first)
    early_stopping_patience: int | None = None  # stop after N evaluations without improvement
    load_best_at_end: bool = True  # end with the best dev state, not the last
    log_file: str | None = None  # append one JSON line per step and evaluation here
    checkpoint_dir: str | None = None  # write resumable training checkpoints here
    checkpoint_every: int | None = None  # steps between checkpoints (needs checkpoint_dir; 0 or none: no checkpoints)
    keep_checkpoints: int = 2  # checkpoints kept (older ones are deleted)
    progress: bool | None = None  # show a progress bar (default: when the output is a terminal)
    bucket: bool = True  # batch texts of similar length together (less padding)

    def __post_init__(self):
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"train.lr must be a non-negative number, got {self.lr!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"train.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("train.batch_size and train.eval_batch_size must be positive")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps must be positive, got {self.max_steps}")
        if not isinstance(self.grad_accum_steps, int) or self.grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps must be a positive integer, got {self.grad_accum_steps!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not (self.loss_scale > 0 and math.isfinite(self.loss_scale)) or self.loss_scale_window < 1:
            raise ValueError("train.loss_scale must be a positive number and train.loss_scale_window a positive integer")

    @property
    def autocast_dtype(self) -> str | None:
        """The dtype of the matrix products (None for fp32)."""
        return PRECISIONS[self.precision]


@dataclass
class TrainState:
    """Where a run is: counters, the best dev metric, and the evaluation history."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)
    loss_scale: float | None = None  # fp16: the dynamic loss scale now
    good_steps: int = 0  # fp16: steps since the last overflow
    skipped_steps: int = 0  # fp16: steps skipped because a gradient overflowed


class Trainer:
    """Train ``model`` on ``train_data``.

    Args:
        model: a minidistill model whose forward accepts the batch keys (and ``labels``).
        tokenizer: turns the datasets' texts into ids.
        train_data: the training :class:`~minidistill.data.TextDataset`.
        eval_data: the evaluation dataset, or None.
        config: a :class:`TrainConfig`.
        compute_loss: ``f(model, batch) -> Tensor``, or ``(Tensor, {name: float})`` to log the
            loss's terms with each step (``terms`` in the log line, ``trainer.last_terms``);
            default: the model's own loss.
        parameters: what to optimise (default: every parameter that requires grad).
        callbacks: ``{event: [fn(trainer), ...]}``.
    """

    #: ``on_train_begin`` before the first step of :meth:`train`; ``on_step_begin`` before each
    #: forward; ``on_step_end`` after each update; ``on_evaluate`` after each evaluation;
    #: ``on_train_exit`` when the loop is left, also after an error (undo what ``on_train_begin``
    #: did there); ``on_train_end`` after a run that finished.
    EVENTS = ("on_train_begin", "on_step_begin", "on_step_end", "on_evaluate", "on_train_exit", "on_train_end")

    def __init__(self, model, tokenizer, train_data, eval_data=None, config: TrainConfig | None = None,
                 compute_loss=None, parameters=None, callbacks=None):
        self.model, self.tokenizer = model, tokenizer
        self.train_data, self.eval_data = train_data, eval_data
        self.config = config or TrainConfig()
        self.compute_loss = compute_loss or default_loss
        self.callbacks = {e: [] for e in self.EVENTS}
        for event, fns in (callbacks or {}).items():
            for fn in fns:
                self.add_callback(event, fn)
        self.state = TrainState()
        cfg = self.config
        lp = cfg.autocast_dtype
        if lp is not None and lp not in model.backend.low_precision:
            raise ValueError(f"train.precision={cfg.precision} needs the torch backend (bf16 / fp16 matrix products); "
                             f"this model is on the {model.backend.name} backend: use precision=fp32 there")
        if lp is not None and not model.backend.native_low_precision(lp):
            warnings.warn(f"train.precision={cfg.precision}: this device ({model.backend.device}) has no {lp} "
                          "instructions, so torch emulates them and the step is much slower than in fp32 (10× on an "
                          "AVX2 CPU); mixed precision pays on GPUs and on CPUs with AVX-512 BF16 / AMX", stacklevel=2)
        if cfg.precision == "fp16":
            self.state.loss_scale = float(cfg.loss_scale)
        if cfg.checkpoint_every and cfg.checkpoint_dir is None:  # (the CLI picks a folder itself)
            raise ValueError("train.checkpoint_every needs train.checkpoint_dir")
        steps_per_epoch = train_data.num_batches(cfg.batch_size, tokenizer, cfg.max_length)
        self.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        if parameters is None:
            params = param_groups(model, cfg.weight_decay) if cfg.optimizer == "adamw" else [
                p for p in model.parameters() if p.requires_grad]
        else:
            params = list(parameters)
        if cfg.optimizer == "adamw":
            self.optimizer = AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.schedule = Schedule(self.optimizer, cfg.schedule, self.total_steps, int(cfg.warmup_ratio * self.total_steps))
        self.metric = cfg.metric or _default_metric(train_data)
        self._best_state = None
        self.last_loss = float("nan")
        self.last_terms: dict = {}
        self.main = True  # whether this process writes checkpoints, logs and progress
        self.reducer = None
        if distributed.setup(model.backend):  # launched by torchrun: data-parallel
            self.main = distributed.is_main()
            trained = list(self.optimizer.parameters())
            distributed.broadcast_parameters(trained)  # every rank starts from rank 0's weights
            self.reducer = distributed.GradReducer(trained)

    def _non_finite_message(self, value: float, step: int) -> str:
        """What to say when the loss is NaN or infinite: the step and the last good checkpoint."""
        where = "no checkpoint was written (set train.checkpoint_dir and train.checkpoint_every to keep some)"
        if self.config.checkpoint_dir:
            try:
                where = f"the last good checkpoint is {latest_checkpoint(self.config.checkpoint_dir)}"
            except (FileNotFoundError, ValueError):
                where = f"no checkpoint in {self.config.checkpoint_dir} yet"
        return (f"the loss became {value} at step {step} (epoch {self.state.epoch}); the run stopped before "
                f"updating the parameters; {where}; lower train.lr or check the data")

    # ---------------------------------------------------------------- events
    def add_callback(self, event: str, fn) -> None:
        """Call ``fn(trainer)`` on ``event`` (one of :attr:`EVENTS`)."""
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; use one of {self.EVENTS}")
        self.callbacks[event].append(fn)

    def _trigger(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    # ----------------------------------------------------------------- train
    def train(self) -> TrainState:
        """Run until ``max_steps`` / ``epochs`` or early stopping; returns the final state."""
        cfg, st = self.config, self.state
        bar = _progress(self.total_steps, st.step, cfg.progress) if self.main else None
        ops = self.model.backend
        if st.step == 0:
            ops.seed(cfg.seed)  # dropout draws: deterministic from the run's seed
        log = open(cfg.log_file, "a", encoding="utf-8") if cfg.log_file and self.main else None
        try:
            self._trigger("on_train_begin")
            while st.step < self.total_steps and not st.stopped_early:
                batches = self.train_data.batches(self.tokenizer, cfg.batch_size, cfg.max_length, shuffle=True,
                                                  seed=cfg.seed, epoch=st.epoch, bucket=cfg.bucket,
                                                  skip=st.batch_in_epoch)
                for batch in batches:
                    start = time.perf_counter()
                    self.model.train()
                    self._trigger("on_step_begin")
                    value, skipped = self._forward_backward(batch)
                    grad_norm, lr = None, self.optimizer.param_groups[0]["lr"]
                    if not skipped:
                        params = list(self.optimizer.parameters())
                        grad_norm = clip_grad_norm(params, cfg.max_grad_norm) if cfg.max_grad_norm else None
                        self.optimizer.step()
                    self.schedule.step()
                    self.optimizer.zero_grad()
                    self.model.zero_grad()
                    st.step += 1
                    st.batch_in_epoch += 1
                    self.last_loss = value
                    seconds = time.perf_counter() - start
                    n = len(batch["input_ids"])
                    record = {"step": st.step, "epoch": st.epoch, "loss": self.last_loss, "lr": lr,
                              "grad_norm": grad_norm, "seq_per_s": n / seconds,
                              "tokens": int(batch["attention_mask"].sum())}
                    if self.last_terms:
                        record["terms"] = self.last_terms
                    if cfg.precision == "fp16":
                        record.update(loss_scale=st.loss_scale, skipped=skipped, skipped_steps=st.skipped_steps)
                    if log:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{self.last_loss:.4f}", seq_s=f"{n / seconds:.1f}")
                    self._trigger("on_step_end")
                    if cfg.eval_every and self.eval_data is not None and st.step % cfg.eval_every == 0:
                        self._evaluate_and_track(log)
                    if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    if st.step >= self.total_steps or st.stopped_early:
                        break
                else:
                    st.epoch += 1
                    st.batch_in_epoch = 0
            if self.eval_data is not None and (not st.history or st.history[-1]["step"] != st.step):
                self._evaluate_and_track(log)
            if cfg.load_best_at_end and self._best_state is not None and st.best_step != st.step:
                self.model.load_state_dict(self._best_state)
        finally:
            if bar is not None:
                bar.close()
            if log:
                log.close()
            self._trigger("on_train_exit")
        self._trigger("on_train_end")
        return st

    def _forward_backward(self, batch) -> tuple[float, bool]:
        """Gradients of the global ``batch``'s loss in ``.grad``: this process's rows, in
        ``grad_accum_steps`` micro-batches, each loss weighted by its share of the batch's
        examples, summed over processes. Returns ``(loss, skipped)``: the batch's mean loss, and
        whether the step must be skipped (fp16 overflow; the scale is lowered then)."""
        cfg, st = self.config, self.state
        n = len(batch["input_ids"])
        mine = take_rows(batch, distributed.shard(n)) if self.reducer is not None else batch
        parts = split_rows(mine, cfg.grad_accum_steps) if len(mine["input_ids"]) else []
        scale = st.loss_scale if cfg.precision == "fp16" else 1.0
        total, terms = 0.0, {}
        for i, part in enumerate(parts):
            weight = len(part["input_ids"]) / n
            with autocast(cfg.autocast_dtype):
                loss, part_terms = _loss_and_terms(self.compute_loss(self.model, part))
            value = loss.item()
            total += weight * value
            for k, v in part_terms.items():  # each term weighted like the loss: the batch's mean
                terms[k] = terms.get(k, 0.0) + weight * v
            if not math.isfinite(value):
                continue  # no backward: the step is refused or skipped below
            if not loss.requires_grad:  # nothing being trained took part (e.g. every Theseus module
                continue                # drawn from the frozen predecessor): no gradient, no update
            last = i == len(parts) - 1 and self.reducer is not None
            with on_grad_ready(self.reducer.hook) if last else contextlib.nullcontext():
                (loss * (weight * scale) if weight * scale != 1.0 else loss).backward()
        if self.reducer is not None:
            self.reducer.finish()  # every rank now holds the sum over ranks
            names = sorted(terms)
            summed = distributed.all_reduce_sum([total, *(terms[k] for k in names)])
            total, terms = float(summed[0]), {k: float(v) for k, v in zip(names, summed[1:])}
        self.last_terms = terms
        if cfg.precision != "fp16":
            if not math.isfinite(total):  # the parameters are still as they were
                raise FloatingPointError(self._non_finite_message(total, st.step + 1))
            return total, False
        return total, self._unscale(scale, finite=math.isfinite(total))

    def _unscale(self, scale: float, finite: bool) -> bool:
        """fp16: divide the gradients by the loss scale; on an overflow (a non-finite loss or
        gradient) drop them, halve the scale and return True (skip the step); after
        ``loss_scale_window`` good steps double the scale."""
        st, cfg = self.state, self.config
        params = [p for p in self.optimizer.parameters() if p.grad is not None]
        if finite:
            for p in params:
                p.grad = p.grad * (1.0 / scale)
            finite = math.isfinite(sum(float(p.backend.sum(p.grad * p.grad)) for p in params))
        if not finite:
            for p in params:
                p.grad = None
            st.loss_scale = max(scale / 2.0, 1.0)
            st.good_steps = 0
            st.skipped_steps += 1
            return True
        st.good_steps += 1
        if st.good_steps >= cfg.loss_scale_window:
            st.loss_scale, st.good_steps = scale * 2.0, 0
        return False

    def _evaluate_and_track(self, log) -> dict:
        st, cfg = self.state, self.config
        result = self.evaluate(self.eval_data)
        result["step"] = st.step
        st.history.append(result)
        if log:
            log.write(json.dumps({"step": st.step, "eval": {k: v for k, v in result.items() if k != "step"}}) + "\n")
            log.flush()
        value = result.get(self.metric)
        if value is not None and (st.best_metric is None or value > st.best_metric):
            st.best_metric, st.best_step, st.bad_evals = value, st.step, 0
            if cfg.load_best_at_end:
                self._best_state = {k: self.model.backend.copy(v) for k, v in self.model.state_dict().items()}
        elif value is not None:
            st.bad_evals += 1
            if cfg.early_stopping_patience is not None and st.bad_evals >= cfg.early_stopping_patience:
                st.stopped_early = True
        self._trigger("on_evaluate")
        return result

    # -------------------------------------------------------------- evaluate
    def predict(self, data) -> np.ndarray:
        """Logits for every example of ``data`` (in order)."""
        return predict(self.model, self.tokenizer, data, self.config.eval_batch_size, self.config.max_length)

    def evaluate(self, data) -> dict:
        """The task's metrics (and mean loss) on ``data`` (in the training precision with
        ``precision_eval``; sharded over the processes of a data-parallel run)."""
        cfg = self.config
        with autocast(cfg.autocast_dtype if cfg.precision_eval else None):
            return evaluate(self.model, self.tokenizer, data, cfg.eval_batch_size, cfg.max_length)

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, directory=None) -> Path:
        """Write a training checkpoint ``step-XXXXXXXX`` into ``directory`` (default: the
        config's ``checkpoint_dir``), atomically, and point ``latest`` at it."""
        root = Path(directory or self.config.checkpoint_dir)
        name = f"step-{self.state.step:08d}"
        ranks_rng = None
        if self.reducer is not None:  # each rank's dropout stream, written by rank 0 alone
            ranks_rng = _jsonable(distributed.all_gather_object(self.model.backend.get_rng_state()))
            if not self.main:
                return root / name
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            # every parameter of the training model (frozen ones and method parts too: a Theseus
            # predecessor, WID's compactors), shared ones once
            tensors, aliases = unique_tensors(self.model.named_parameters())
            save_weights(staging / "model.safetensors", tensors, alias_metadata(aliases))
            opt = self.optimizer.state_dict()
            arrays = {f"{i}.{k}": v for i, st in opt["state"].items() for k, v in st.items()}
            save_weights(staging / "optimizer.safetensors", arrays, {"kind": "minidistill-optimizer"})
            own = {id(q) for q in self.model.parameters()}
            extra = {str(i): q.numpy() for i, q in enumerate(self.optimizer.parameters()) if id(q) not in own}
            if extra:  # trained parameters outside the model (a distillation objective's projection)
                save_weights(staging / "extra_parameters.safetensors", extra, {"kind": "minidistill-extra"})
            if self._best_state is not None:  # so that a resumed run ends on the same best state
                save_weights(staging / "best.safetensors", {k: self.model.backend.to_numpy(v)
                                                           for k, v in self._best_state.items()})
            ops = self.model.backend
            trainer_state = {
                "format": "minidistill-training-checkpoint-1",
                "state": asdict(self.state),
                "optimizer": {"step": opt["step"], "groups": opt["groups"]},
                "schedule": self.schedule.state_dict(),
                "rng": {"backend": ops.name, "state": _jsonable(ops.get_rng_state()), "ranks": ranks_rng},
                "config": _jsonable(asdict(self.config)),
                "model_config": self.model.config.to_dict(),
                "model_class": type(self.model).__name__,
                # what the model keeps outside its parameters (WID's masks, Theseus's gate generator)
                "model_state": self.model.training_state() if hasattr(self.model, "training_state") else None,
            }
            write_json(staging / "trainer_state.json", trainer_state)
            final = root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        with atomic_path(root / "latest") as tmp:
            tmp.write_text(name + "\n")
        self._prune(root)
        return root / name

    def _prune(self, root: Path) -> None:
        keep = max(1, self.config.keep_checkpoints)
        ckpts = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in ckpts[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self, directory=None) -> "Trainer":
        """Continue from the latest checkpoint in ``directory`` (or a ``step-…`` folder)."""
        path = latest_checkpoint(directory or self.config.checkpoint_dir)
        meta_path = path / "trainer_state.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{meta_path}: unreadable training state ({e})") from None
        if meta.get("format") != "minidistill-training-checkpoint-1":
            raise CheckpointError(f"{path} is not a minidistill training checkpoint")
        if meta["model_class"] != type(self.model).__name__:
            raise CheckpointError(f"{path} holds a {meta['model_class']}, not a {type(self.model).__name__}")
        mine = self.model.config.to_dict()
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "vocab_size", "num_labels"):
            if meta["model_config"].get(key) != mine.get(key):
                raise CheckpointError(
                    f"{path} comes from another architecture: {key} is {meta['model_config'].get(key)} "
                    f"there and {mine.get(key)} here")
        restore_model(self.model, path, meta)
        params = list(self.optimizer.parameters())
        if (path / "extra_parameters.safetensors").is_file():
            for i, arr in load_weights_file(path / "extra_parameters.safetensors").items():
                q = params[int(i)]
                q.data = q.backend.copy(q.backend.asarray(arr, dtype=q.dtype.name))
        if (path / "best.safetensors").is_file():
            ops = self.model.backend
            self._best_state = {k: ops.asarray(v) for k, v in load_weights_file(path / "best.safetensors").items()}
        state: dict = {}
        for name, arr in load_weights_file(path / "optimizer.safetensors").items():
            index, slot = name.split(".", 1)  # "<parameter position>.<m|v|buf>"
            state.setdefault(int(index), {})[slot] = arr
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["optimizer"]["groups"]]
        self.optimizer.load_state_dict({"step": meta["optimizer"]["step"], "groups": groups, "state": state})
        self.schedule.load_state_dict(meta["schedule"])
        ops = self.model.backend
        if meta["rng"]["backend"] == ops.name:
            ranks = meta["rng"].get("ranks")
            if self.reducer is not None and ranks is not None and len(ranks) != distributed.world_size():
                raise CheckpointError(f"{path} was written by {len(ranks)} processes, and {distributed.world_size()} "
                                      "resume it: resume with the same number (the dropout streams are per process)")
            ops.set_rng_state(ranks[distributed.rank()] if self.reducer is not None and ranks else meta["rng"]["state"])
        self.state = TrainState(**meta["state"])
        log = self.config.log_file
        if log and Path(log).is_file() and self.main:  # drop log lines written after this checkpoint
            kept = [line for line in Path(log).read_text().splitlines() if json.loads(line)["step"] <= self.state.step]
            with atomic_path(log) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
        return self


def restore_model(model, directory, meta: dict | None = None) -> Path:
    """Load the model of the latest training checkpoint in ``directory`` into ``model``: its
    parameters and what it keeps beside them (``load_training_state``); returns the checkpoint."""
    path = latest_checkpoint(directory)
    if meta is None:
        try:
            meta = json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path / 'trainer_state.json'}: unreadable training state ({e})") from None
    model.load_state_dict({k: v for k, v in load_weights(path).items()})
    if meta.get("model_state") is not None:
        model.load_training_state(meta["model_state"])
    return path


def has_checkpoint(directory) -> bool:
    """Whether ``directory`` holds a training checkpoint."""
    try:
        latest_checkpoint(directory)
        return True
    except CheckpointError:
        return False


def load_weights_file(path: Path) -> dict:
    """All arrays of one safetensors file."""
    from safetensors.numpy import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    return load_file(str(path))


def latest_checkpoint(directory) -> Path:
    """The newest ``step-…`` checkpoint in ``directory`` (or ``directory`` itself if it is one)."""
    if directory is None:
        raise CheckpointError("no checkpoint directory given")
    root = Path(directory)
    if (root / "trainer_state.json").is_file():
        return root
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "trainer_state.json").is_file():
            return candidate
    ckpts = sorted(p for p in root.glob("step-*") if (p / "trainer_state.json").is_file())
    if not ckpts:
        raise CheckpointError(f"no training checkpoint in {root}")
    return ckpts[-1]


def merge_callbacks(*tables) -> dict:
    """One ``{event: [fn, ...]}`` table from several (None entries are skipped), in order."""
    out: dict = {}
    for table in tables:
        for event, fns in (table or {}).items():
            out.setdefault(event, []).extend(fns)
    return out


def time_step(model, tokenizer, data, config: TrainConfig, compute_loss=None, repeats: int = 3) -> float:
    """Seconds of one training step's forward and backward on the run's first batch (shuffled
    and bucketed as training will), the fastest of ``repeats`` after a first one that compiles
    kernels: to plan a run before it starts. The model's parameters, gradients, mode and the
    backend's random state are left as they were."""
    compute_loss = compute_loss or default_loss
    batch = next(iter(data.batches(tokenizer, config.batch_size, config.max_length, shuffle=True, seed=config.seed,
                                   epoch=0, bucket=config.bucket)))
    ops, was_training = model.backend, model.training
    rng = ops.get_rng_state()
    kept = model.training_state() if hasattr(model, "training_state") else None  # e.g. Theseus's gate draws
    grads = {id(p): p.grad for p in model.parameters()}
    times = []
    try:
        model.train()
        with autocast(config.autocast_dtype):
            _backward(_loss_and_terms(compute_loss(model, batch))[0])  # compiles and allocates: not counted
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                _backward(_loss_and_terms(compute_loss(model, batch))[0])
                times.append(time.perf_counter() - start)
    finally:
        for p in model.parameters():
            p.grad = grads[id(p)]
        ops.set_rng_state(rng)
        if kept is not None:
            model.load_training_state(kept)
        model.train(was_training)
    return min(times)


def _backward(loss) -> None:
    """``loss.backward()`` when anything being trained took part in it."""
    if loss.requires_grad:
        loss.backward()


def _loss_and_terms(out) -> tuple:
    """A ``compute_loss`` result as ``(loss, {name: float})``."""
    return out if isinstance(out, tuple) else (out, {})


def default_loss(model, batch):
    """The model's own loss on a batch with ``labels``."""
    return model(**model_inputs(batch), labels=batch["labels"]).loss


def predict(model, tokenizer, data, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """Logits for ``data`` in order, in evaluation mode without a tape: (N, C) for sentence
    tasks; for windowed data (token tagging, QA) one row per window, (windows, T, C), padded
    with zeros to the longest window.

    In a data-parallel run every process predicts its contiguous share of the rows and the
    shares are gathered in order, so each process returns the same full array (every rank
    must call it)."""
    model.eval()
    sharded = distributed.active()
    part = data.select(range(*distributed.shard(len(data)).indices(len(data)))) if sharded else data
    outs = []
    with no_grad():
        for batch in part.batches(tokenizer, batch_size, max_length, shuffle=False):
            outs.append(model(**model_inputs(batch)).logits.numpy())
    logits = _stack_rows(outs, (0, model.config.num_labels))
    if sharded:
        logits = _stack_rows(distributed.all_gather_object(logits), (0, model.config.num_labels))
    return logits


def _stack_rows(parts, empty_shape) -> np.ndarray:
    """Concatenate arrays along rows, padding a token axis (axis 1 of 3-D arrays) with zeros."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(empty_shape, dtype=np.float32)
    if parts[0].ndim == 3:
        width = max(p.shape[1] for p in parts)
        parts = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in parts]
    return np.concatenate(parts)


def evaluate(model, tokenizer, data, batch_size: int = 64, max_length: int = 128) -> dict:
    """Metrics of the task on ``data`` (which must be labelled), plus the mean loss: the task's
    own metrics for sentence tasks, entity precision / recall / F1 and word accuracy for
    tagging, SQuAD exact match and F1 for question answering."""
    if data.labels is None:
        raise ValueError("evaluate needs labelled data")
    logits = predict(model, tokenizer, data, batch_size, max_length)
    task = data.task
    kind = getattr(task, "kind", "sequence")
    if kind == "token":
        return evaluate_tagging(data, logits, tokenizer, max_length)
    if kind == "qa":
        return evaluate_qa(data, logits, tokenizer, max_length)
    gold = data.labels
    if task is not None and task.is_regression:
        pred = logits[:, 0]
        loss = float(np.mean((pred - gold) ** 2))
    else:
        pred = logits.argmax(-1)
        loss = _mean_nll(logits, gold)
    names = task.metrics if task is not None else ("accuracy",)
    return {**metrics_mod.compute(names, pred, gold), "loss": loss}


def _mean_nll(logits, gold) -> float:
    """Mean negative log-likelihood of integer targets (-100 ignored) under ``logits`` (…, C)."""
    logits, gold = logits.reshape(-1, logits.shape[-1]).astype(np.float64), np.asarray(gold).reshape(-1)
    keep = gold != -100
    z = logits[keep] - logits[keep].max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(int(keep.sum())), gold[keep]].mean()) if keep.any() else 0.0


def evaluate_tagging(data, logits, tokenizer, max_length: int) -> dict:
    """Entity-level scores (conlleval's rules) of window logits (W, T, C) on a token dataset:
    each word's tag is read at its first sub-word in the window that owns it."""
    encoded = data.encode(tokenizer, max_length)
    gold = np.full(logits.shape[:2], -100, dtype=np.int64)
    for w, (ids, _, labels, _, _) in enumerate(encoded):
        gold[w, :len(labels)] = labels
    names = data.task.labels
    pred = data.word_predictions(logits, tokenizer, max_length)
    pred_tags = [[names[t] for t in p] for p in pred]
    gold_tags = [data.tag_strings(i) for i in range(len(data))]
    scores = metrics_mod.entity_scores(pred_tags, gold_tags, data.task.scheme)
    scores.pop("per_type")
    return {**scores, "loss": _mean_nll(logits, gold)}


def evaluate_qa(data, logits, tokenizer, max_length: int) -> dict:
    """SQuAD exact match and F1 of window start / end logits (W, T, 2) on a QA dataset."""
    encoded = data.encode(tokenizer, max_length)
    answers = data.predictions(logits[..., 0], logits[..., 1], tokenizer, max_length)
    scores = metrics_mod.squad_scores([a for a, _ in answers], [[t for t, _ in e.answers] for e in data.examples],
                                      data.version_2)
    targets = np.asarray([e[2] for e in encoded], dtype=np.int64).reshape(-1, 2)
    losses = []
    for k in range(2):
        z = logits[..., k].copy()  # (W, T)
        for w, e in enumerate(encoded):
            z[w, len(e[0]):] = -np.inf  # padding is no position
        losses.append(_mean_nll(z[:, None, :], targets[:, k]))
    return {**scores, "loss": float(np.mean(losses))}


def _default_metric(data) -> str:
    task = getattr(data, "task", None)
    return task.metrics[0] if task is not None else "accuracy"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def _progress(total, initial, enabled):
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
