"""The package's layering: every import goes to the module's own layer or one below it, as the
table in ``docs/architecture.md`` says (the test reads the table, so the two cannot drift)."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "minidistill"


def layer_table(doc: Path) -> dict[str, int]:
    """``{top-level module or package: layer}`` from the rows ``| N | `a`, `b` | … |`` of the doc."""
    table = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                table[name] = int(m.group(1))
    return table


def _unit(dotted: str) -> str:
    """``minidistill.nn.layers`` → ``nn``; ``minidistill`` → ``__init__``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_imports(package_dir: Path):
    """Every import of the package by its own modules: ``(importer unit, imported unit, where)``."""
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("").parts  # ("minidistill", "nn", "layers")
        package = rel[:-1]  # the package a relative import starts from
        me = ".".join(rel[:-1]) if path.name == "__init__.py" else ".".join(rel)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = list(package[: len(package) - node.level + 1])
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from . import nn`` names a unit in the imported names
                targets = [module] if node.module or module.count(".") else [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    yield _unit(me), _unit(target), f"{path.relative_to(package_dir.parent)}:{node.lineno}"


def layering_violations(package_dir: Path, table: dict[str, int]) -> list[str]:
    """Imports that go up the table, and modules the table does not place."""
    problems = []
    units = {p.stem if p.is_file() else p.name for p in package_dir.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    for unit in sorted(units - set(table)):
        problems.append(f"{unit} has no layer in docs/architecture.md")
    for src, dst, where in package_imports(package_dir):
        if src == dst or src not in table or dst not in table:
            continue
        if table[dst] > table[src]:
            problems.append(f"{where}: {src} (layer {table[src]}) imports {dst} (layer {table[dst]})")
    return problems


def test_the_doc_places_every_module_and_every_import_goes_down():
    table = layer_table(ROOT / "docs" / "architecture.md")
    assert table["backends"] < table["core"] < table["nn"] < table["models"] < table["train"] < table["compress"]
    assert layering_violations(ROOT / PACKAGE, table) == []


def test_a_planted_upward_import_is_caught(tmp_path):
    """The check can fail: a base layer that imports a method is reported with file and line."""
    copy = tmp_path / PACKAGE
    shutil.copytree(ROOT / PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    layers = copy / "nn" / "layers.py"
    layers.write_text(layers.read_text() + "\n\ndef _planted():\n    from ..compress import fold  # noqa\n")
    table = layer_table(ROOT / "docs" / "architecture.md")
    problems = layering_violations(copy, table)
    assert len(problems) == 1 and "nn/layers.py" in problems[0] and "imports compress" in problems[0], problems
    (copy / "newmodule.py").write_text("X = 1\n")
    assert any("newmodule has no layer" in p for p in layering_violations(copy, table))


def test_no_base_layer_names_a_method():
    """Below ``compress`` no code names a compression method (comments and docstrings aside).
    MiniALBERT is a model as well as a method: its model lives in ``models`` like the BiLSTM."""
    table = layer_table(ROOT / "docs" / "architecture.md")
    words = re.compile(r"compact(?!ed)|CompAct|\bwid\b|WID|theseus|Theseus|compacter|Compacter")
    bad = []
    for unit, layer in table.items():
        if layer >= table["compress"]:
            continue
        base = ROOT / PACKAGE / unit
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for path in files:
            if not path.exists():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Name):
                    names = [node.id]
                elif isinstance(node, ast.Attribute):
                    names = [node.attr]
                elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names = [node.name]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 40:
                    names = [node.value]  # short strings: keys and names, not docstrings
                bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if words.search(n)]
    assert bad == []


def test_nn_functional_is_the_whole_functional_api():
    """``nn.functional`` re-exports every public op of ``core.functions`` and adds the layer ops
    (PHM, LSTM), which left the core: the core holds only generic ops."""
    import inspect

    from minidistill.core import functions as core_ops
    from minidistill.nn import functional as F

    public = {n for n, f in inspect.getmembers(core_ops, inspect.isfunction)
              if not n.startswith("_") and f.__module__ == core_ops.__name__}
    missing = {n for n in public if getattr(F, n, None) is not getattr(core_ops, n)}
    assert missing <= {"numel", "linear_forward_2d"}, missing  # helpers for Functions, not ops
    for name in ("phm_linear", "kron_weight", "lstm"):
        assert callable(getattr(F, name)) and not hasattr(core_ops, name)
