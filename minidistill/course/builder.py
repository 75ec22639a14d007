"""``minidistill course build``: a student copy of the package with the solutions taken out.

The copy holds the package (every solution block of the chosen modules replaced by
``raise NotImplementedError``), ``pyproject.toml``, the task tests and notebooks and guides of
modules 0..N, and a README for the student. It is written to a temporary folder next to
the target and renamed into place, so a failed build never leaves half a copy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .tasks import MODULES, CourseError, hollow_lines, module, package_blocks

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".ipynb_checkpoints")


def source_root() -> Path:
    """The repository checkout this package was installed from (where ``tests/course`` lives)."""
    return Path(__file__).resolve().parents[2]


def _check_source(root: Path) -> None:
    missing = [p for p in ("minidistill", "tests/course", "pyproject.toml") if not (root / p).exists()]
    if missing:
        raise CourseError(f"{root} is not a minidistill source checkout (missing {', '.join(missing)}); "
                          "course build needs the repository, not an installed wheel: pass --source")


def build(out, upto: int, keep_earlier: bool = False, source=None, force: bool = False) -> dict:
    """Write the student copy for modules 0..``upto`` to ``out``.

    Args:
        out: the folder to create (refused if it exists and is not empty, unless ``force``).
        upto: the last module included; its tasks (and, unless ``keep_earlier``, those of
            every earlier module) are hollowed out.
        keep_earlier: keep modules before ``upto`` solved, as courses that carry work forward.
        source: the repository checkout (default: the one this package lives in).
        force: replace an existing ``out``.

    Returns:
        ``{"out", "hollowed": [task ids], "modules": [numbers], "files": n}``.
    """
    root = Path(source) if source is not None else source_root()
    _check_source(root)
    module(upto)  # validates the number
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise CourseError(f"{out} exists and is not empty; pass --force to replace it")
    included = [m for m in MODULES if m.number <= upto]
    hollowed = {m.number for m in included if not keep_earlier or m.number == upto}
    blocks = package_blocks(root / "minidistill")
    ids = {b.task for b in blocks}
    unmarked = [t.id for m in included for t in m.tasks if t.id not in ids]
    if unmarked:
        raise CourseError(f"tasks without a solution block in the library: {unmarked}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(root / "minidistill", tmp / "minidistill", ignore=_IGNORE)
        by_file: dict = {}
        for b in blocks:
            if int(b.task.split(".")[0]) in hollowed:
                by_file.setdefault(b.path, []).append(b)
        for path, file_blocks in by_file.items():
            rel = path.relative_to(root / "minidistill")
            lines = path.read_text(encoding="utf-8").splitlines()
            (tmp / "minidistill" / rel).write_text("\n".join(hollow_lines(lines, file_blocks)) + "\n", encoding="utf-8")
        for rel in ("pyproject.toml", "tests/__init__.py", "tests/conftest.py", "tests/course/__init__.py",
                    "tests/course/conftest.py"):
            if (root / rel).exists():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, tmp / rel)
        for m in included:
            for rel in (m.test_file, m.notebook, m.guide):
                if not (root / rel).exists():
                    raise CourseError(f"module {m.number} is missing {rel} in {root}")
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, tmp / rel)
        (tmp / "README.md").write_text(student_readme(included, hollowed), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done = sorted({b.task for blks in by_file.values() for b in blks}, key=lambda s: tuple(map(int, s.split("."))))
    return {"out": str(out), "hollowed": done, "modules": [m.number for m in included],
            "files": sum(1 for p in out.rglob("*") if p.is_file())}


def student_readme(included, hollowed) -> str:
    """The README written into a student copy: what to do, how to test and how to grade."""
    lines = ["# minidistill — course assignments", "",
             "This is a working copy of minidistill with holes in it. Each hole is a block",
             "", "```python", "# BEGIN TASK 1.2", 'raise NotImplementedError("Task 1.2: …")', "# END TASK 1.2", "```", "",
             "Replace the `raise` with your code (keep the two marker comments). Work in this folder:",
             "", "```bash",
             "python -m pip install -e '.[test]'   # once, in a fresh virtual environment",
             "python -m pytest -m task1_2          # the tests of one task",
             "minidistill course grade .            # the score table of every task", "```", "",
             "Debug a Numba kernel as plain Python with `NUMBA_DISABLE_JIT=1 python -m pytest -m task2_1`.",
             "Until module 2 is solved, run with `MINIDISTILL_BACKEND=numpy` where the Numba backend is needed.", "",
             "## Modules", ""]
    for m in included:
        state = "to do" if m.number in hollowed else "solved (carried forward)"
        lines += [f"### Module {m.number}: {m.title} — {state}", "",
                  f"Guide: `{m.guide}` · notebook: `{m.notebook}` · tests: `{m.test_file}`", ""]
        lines += [f"- Task {t.id} ({t.points} points): {t.title}" for t in m.tasks]
        lines.append("")
    return "\n".join(lines)
