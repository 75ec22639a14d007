"""The registry of compression methods: one place that the command line, the demo and the
docs read, filled by each method's own module.

A method says what it contributes with one :func:`register` call at the bottom of its module:

* ``role="student"``: it builds a student from a fine-tuned teacher
  (``minidistill distill --student.kind=NAME``). ``build(teacher, student, settings,
  total_steps)`` gets the common :class:`StudentSpec` (depth, width, initialisation, seed) and
  the method's own settings section; ``folds`` says the trained student is folded into a plain
  model before it is saved; ``keep_last`` that its best dev state is not a finished one (WID is
  still pruning then); the student's ``callbacks()`` (if it has them) join the Trainer.
* ``role="training"``: it changes how any model trains (``--NAME.key=value`` on ``finetune``
  and ``distill``); ``callbacks(settings)`` gives its Trainer callbacks.
* ``role="adapters"``: parameter-efficient fine-tuning (``minidistill finetune --adapters=NAME``);
  ``build(model, spec)`` inserts the adapters and freezes the rest, in place, from the shared
  :class:`AdapterSpec`.

``settings`` is a dataclass: its fields become the config section ``[NAME]`` with their
defaults and the trailing comments as help (``minidistill config distill``). ``demo(ctx)``
returns the method's steps in ``minidistill demo`` (:class:`DemoStep`). Modules of this package
are imported on the first look-up, so a new method is one new module: nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

ROLES = ("student", "training", "adapters")


@dataclass
class StudentSpec:
    """The student every method shares: which method makes it, and its size and initialisation."""

    kind: str = "transformer"  # which method makes the student (minidistill config --methods lists them)
    num_layers: int = 2  # depth of transformer and Theseus students
    hidden_size: int | None = None  # width (default: the teacher's; narrower: fresh layers, PCA embeddings); WID's target
    num_attention_heads: int | None = None  # heads of a narrower student / WID target (default: the teacher's ratio)
    intermediate_size: int | None = None  # FFN width of a narrower student / WID target
    init: str = "lower"  # lower | upper | uniform | random | teacher layer ids "0,1"
    seed: int = 0  # seed of the student's fresh weights and of random choices


@dataclass
class AdapterSpec:
    """The adapter settings every adapter method shares (``minidistill finetune --adapters=…``)."""

    reduction: int | None = None  # bottleneck = hidden / reduction (default: the method's own)
    phm_n: int = 4  # PHM adapters: n, the number of Kronecker terms
    phm_rank: int = 1  # PHM adapters: rank of each fast weight (1 = Compacter's s tᵀ)
    train_pooler: bool = False  # also train BERT's pooler (a two-layer head)


@dataclass(frozen=True)
class DemoStep:
    """One step of ``minidistill demo``: a ``finetune`` or ``distill`` run given as its config
    table (the teacher's folder, data, backend and training settings come from the demo)."""

    name: str  # the output folder's name under the demo's folder
    label: str  # what the demo prints and the report calls it
    command: str  # "finetune" | "distill"
    config: dict = field(default_factory=dict)
    cache: bool = False  # serve the teacher's logits from the demo's shared cache


@dataclass(frozen=True)
class DemoContext:
    """What a method's demo steps are built from: the preset's training table for students and
    its step counts, so that every method trains as long as the preset allows."""

    preset: str
    student_train: dict
    student_steps: int | None


@dataclass(frozen=True)
class Method:
    """What one compression method contributes (see the module docstring).

    Args:
        name: its key: ``--student.kind=NAME`` or the config section ``[NAME]``.
        summary: one line for ``--help`` and the docs.
        role: ``"student"`` or ``"training"``.
        settings: the dataclass of its config section, or None.
        build: ``student`` methods: ``build(teacher, student, settings, total_steps) -> model``;
            ``adapters`` methods: ``build(model, spec: AdapterSpec)``, in place.
        callbacks: ``training`` methods: ``callbacks(settings) -> {event: [fn]}``.
        folds: the trained student is folded before saving.
        keep_last: keep the last state, not the best dev one.
        recipes: the ``distill --recipe`` values it accepts.
        demo: ``demo(ctx: DemoContext) -> [DemoStep]``, its part of ``minidistill demo``.
        order: where it comes in listings and in the demo (smaller first).
    """

    name: str
    summary: str
    role: str = "student"
    settings: type | None = None
    build: Callable | None = None
    callbacks: Callable | None = None
    folds: bool = False
    keep_last: bool = False
    recipes: tuple = ("single",)
    demo: Callable | None = None
    order: int = 100


_METHODS: dict[str, Method] = {}
_DISCOVERED = False


def register(method: Method) -> Method:
    """Add ``method`` to the registry (its module calls this once, at import)."""
    if method.role not in ROLES:
        raise ValueError(f"method {method.name!r}: role must be one of {ROLES}, got {method.role!r}")
    if method.settings is not None and not method.name.isidentifier():
        raise ValueError(f"method name {method.name!r} must be an identifier (it names a config section)")
    if method.role in ("student", "adapters") and method.build is None:
        raise ValueError(f"{method.role} method {method.name!r} needs build(...)")
    if method.role == "training" and method.callbacks is None:
        raise ValueError(f"training method {method.name!r} needs callbacks(settings)")
    if method.name in _METHODS and _METHODS[method.name] != method:
        raise ValueError(f"a method named {method.name!r} is registered already")
    _METHODS[method.name] = method
    return method


def _discover() -> None:
    """Import every module of this package once, so that each has registered its methods."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")


def methods(role: str | None = None) -> dict[str, Method]:
    """The registered methods (of one ``role``), in their listing order."""
    _discover()
    found = [m for m in _METHODS.values() if role is None or m.role == role]
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


def get(name: str, role: str) -> Method:
    """The ``role`` method called ``name``; the error lists the known ones."""
    known = methods(role)
    if name not in known:
        raise KeyError(f"no {role} method {name!r}; known: {', '.join(known)}")
    return known[name]
