"""Layer dropping: a student made by removing whole layers of the teacher.

Implements the strategies of "On the Effect of Dropping Layers of Pre-trained Transformer
Models" (Sajjad, Dalvi, Durrani, Nakov, 2020/2023). Of a teacher with L layers ``0 … L−1`` a
set K of layers is kept, in order; the student's layer ``l`` is the teacher's layer ``K[l]``
(embeddings, pooler and head are the teacher's):

    top        K = {0, …, L−d−1}                      drop the d highest layers
    bottom     K = {d, …, L−1}                        drop the d lowest layers
    alternate  K = {0, 2, 4, …} (or {1, 3, 5, …})     drop every other layer ("alternate even/odd")
    symmetric  K = {0, …, ⌈(L−d)/2⌉−1} ∪ {L−⌊(L−d)/2⌋, …, L−1}   drop d middle layers

With ``d = L − keep``. The paper fine-tunes the result; here it is a ``distill`` student, so any
objective (soft KD by default) trains it. The paper found top dropping the best of the
task-agnostic strategies; alternate dropping keeps layers from the whole depth.

This module is the worked example of ``docs/architecture.md``: a method added by one module
(plus its test and docs), which registers itself below.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Method, register
from .student import make_student

STRATEGIES = ("top", "bottom", "alternate", "symmetric")


@dataclass
class LayerDropSettings:
    """Which teacher layers the student keeps."""

    strategy: str = "top"  # top | bottom | alternate | symmetric
    keep: int | None = None  # layers kept (default: half the teacher's; alternate keeps every other one)
    odd: bool = False  # alternate: keep layers 1, 3, 5 … instead of 0, 2, 4 …


def kept_layers(num_layers: int, strategy: str = "top", keep: int | None = None, odd: bool = False) -> list[int]:
    """The teacher layers a ``strategy`` keeps, in order (see the module docstring).

    Args:
        num_layers: L, the teacher's depth.
        strategy: ``top``, ``bottom``, ``alternate`` or ``symmetric``.
        keep: how many layers stay (default ``L // 2``; ``alternate`` ignores it).
        odd: ``alternate`` keeps the odd layers.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"layer_drop.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "alternate":
        return list(range(1 if odd else 0, num_layers, 2))
    keep = num_layers // 2 if keep is None else keep
    if not 1 <= keep <= num_layers:
        raise ValueError(f"layer_drop.keep must be between 1 and the teacher's {num_layers} layers, got {keep}")
    if strategy == "top":
        return list(range(keep))
    if strategy == "bottom":
        return list(range(num_layers - keep, num_layers))
    low = (keep + 1) // 2  # symmetric: the bottom half (rounded up) and the top half of what stays
    return list(range(low)) + list(range(num_layers - (keep - low), num_layers))


def _build(teacher, student, settings: LayerDropSettings, total_steps):
    layers = kept_layers(teacher.config.num_hidden_layers, settings.strategy, settings.keep, settings.odd)
    return make_student(teacher, len(layers), init=layers, seed=student.seed)


register(Method("layer_drop", "layer dropping: keep top, bottom, alternate or symmetric teacher layers (Sajjad et al.)",
                settings=LayerDropSettings, build=_build, order=15))
