"""The course: its modules, their tasks, and the solution blocks marked in the library.

A task's reference solution is the library's own code, fenced in the source by two
comments at the same indentation::

    def backward(ctx, g):
        \"\"\"The docstring stays outside the block.\"\"\"
        # BEGIN TASK 0.4
        ...the solution...
        # END TASK 0.4

``minidistill course build`` replaces the lines between the markers with
``raise NotImplementedError("Task 0.4: …")``; one task may own several blocks. Its tests
carry ``@pytest.mark.task0_4`` (``tests/conftest.py`` registers the markers from :data:`TASKS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Task:
    """One exercise: ``id`` like ``"2.3"``, a title shown to the student, and its points."""

    id: str
    title: str
    points: int = 10

    @property
    def module(self) -> int:
        """The module number (the part before the dot)."""
        return int(self.id.split(".")[0])

    @property
    def marker(self) -> str:
        """The pytest marker of its tests (``task2_3``)."""
        return "task" + self.id.replace(".", "_")


@dataclass(frozen=True)
class CourseModule:
    """A module of the course: its guide, its notebook and its tasks."""

    number: int
    title: str
    guide: str  # path under the repository root
    notebook: str  # path under the repository root
    tasks: tuple = field(default_factory=tuple)

    @property
    def test_file(self) -> str:
        """The module's task tests, under the repository root."""
        return f"tests/course/test_module{self.number}.py"


def _m(number, title, slug, tasks):
    return CourseModule(number, title, f"docs/course/module{number}.md",
                        f"tutorials/course/module{number}_{slug}.ipynb", tuple(Task(*t) for t in tasks))


MODULES: tuple = (
    _m(0, "The tape and gradcheck", "tape", [
        ("0.1", "order the tape: every tensor after the inputs it was computed from"),
        ("0.2", "sum a broadcast gradient back to its input's shape"),
        ("0.3", "central differences for one input array"),
        ("0.4", "backward of the product and the quotient"),
    ]),
    _m(1, "Layers and their backward passes", "layers", [
        ("1.1", "backward of the linear layer (input, weight and bias gradients)"),
        ("1.2", "backward of LayerNorm from its saved statistics"),
        ("1.3", "backward of the softmax from its output"),
        ("1.4", "multi-head scaled dot-product self-attention"),
        ("1.5", "backward of the exact GELU"),
    ]),
    _m(2, "Numba kernels", "numba", [
        ("2.1", "the teaching matmul kernel (i-k-j order, parallel rows)"),
        ("2.2", "a fused LayerNorm forward kernel (one pass for the statistics)"),
        ("2.3", "a fused softmax backward kernel"),
        ("2.4", "the linear layer's bias + residual epilogue, in place"),
    ]),
    _m(3, "BERT from its parts, with real weights", "bert", [
        ("3.1", "sum the word, token-type and position embeddings"),
        ("3.2", "the padding mask over attention keys"),
        ("3.3", "one transformer layer: attention block, then feed-forward block"),
        ("3.4", "the pooler"),
        ("3.5", "read old TensorFlow-converted names (gamma / beta)"),
    ]),
    _m(4, "Distillation losses", "distillation", [
        ("4.1", "soft knowledge distillation with a temperature"),
        ("4.2", "TinyBERT attention-score MSE over real tokens"),
        ("4.3", "attention KL over real queries and keys"),
        ("4.4", "MiniLM self-attention relations"),
    ]),
    _m(5, "Compression", "compression", [
        ("5.1", "WID: the effective weight R W C of a compacted linear map"),
        ("5.2", "BERT-of-Theseus: constant and curriculum replacement rates"),
        ("5.3", "Compacter: the PHM weight Σ A_i ⊗ s_i t_iᵀ"),
    ]),
)

TASKS: dict = {t.id: t for m in MODULES for t in m.tasks}

BEGIN = re.compile(r"^(\s*)# BEGIN TASK (\d+\.\d+)\s*$")
END = re.compile(r"^(\s*)# END TASK (\d+\.\d+)\s*$")


class CourseError(ValueError):
    """A malformed solution block, an unknown task, or a bad course command."""


def module(number: int) -> CourseModule:
    """The module numbered ``number`` (a clear error for an unknown one)."""
    for m in MODULES:
        if m.number == number:
            return m
    raise CourseError(f"no course module {number}; modules are {[m.number for m in MODULES]}")


@dataclass(frozen=True)
class Block:
    """One marked solution block: lines ``begin``..``end`` (0-based, markers included)."""

    task: str
    path: Path
    begin: int
    end: int
    indent: str


def find_blocks(path: Path) -> list[Block]:
    """The solution blocks of one source file, checked: markers pair up at the same
    indentation, never nest, and name a known task."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    blocks, open_ = [], None
    for i, line in enumerate(lines):
        b, e = BEGIN.match(line), END.match(line)
        if b:
            if open_ is not None:
                raise CourseError(f"{path}:{i + 1}: TASK {b.group(2)} begins inside TASK {open_[1]}")
            if b.group(2) not in TASKS:
                raise CourseError(f"{path}:{i + 1}: unknown task {b.group(2)} (not in minidistill.course.MODULES)")
            open_ = (i, b.group(2), b.group(1))
        elif e:
            if open_ is None or e.group(2) != open_[1]:
                raise CourseError(f"{path}:{i + 1}: END TASK {e.group(2)} without its BEGIN")
            if e.group(1) != open_[2]:
                raise CourseError(f"{path}:{i + 1}: END TASK {e.group(2)} is not indented as its BEGIN")
            blocks.append(Block(open_[1], Path(path), open_[0], i, open_[2]))
            open_ = None
    if open_ is not None:
        raise CourseError(f"{path}:{open_[0] + 1}: TASK {open_[1]} is never closed")
    return blocks


def package_blocks(package_dir: Path) -> list[Block]:
    """Every solution block under a package folder, sorted by task."""
    blocks = []
    for path in sorted(Path(package_dir).rglob("*.py")):
        if "__pycache__" not in path.parts:
            blocks.extend(find_blocks(path))
    return sorted(blocks, key=lambda b: (tuple(int(p) for p in b.task.split(".")), str(b.path), b.begin))


def hollow_lines(lines: list[str], blocks: list[Block]) -> list[str]:
    """``lines`` with each block's body replaced by ``raise NotImplementedError("Task …")``,
    markers kept so the student sees where to write."""
    out = list(lines)
    for blk in sorted(blocks, key=lambda b: b.begin, reverse=True):
        task = TASKS[blk.task]
        stub = f'{blk.indent}raise NotImplementedError("Task {task.id}: {task.title}")'
        out[blk.begin + 1: blk.end] = [stub]
    return out
