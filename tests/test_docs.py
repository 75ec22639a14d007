"""The documentation site builds in strict mode (broken links and bad docstrings fail it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=root, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    res = _build(ROOT, tmp_path / "site")
    assert res.returncode == 0, res.stderr[-3000:]
    for page in ("install", "demo", "architecture", "wid", "theseus", "adapters", "minialbert", "distillation",
                 "course/module3", "api/compress"):
        assert (tmp_path / "site" / page / "index.html").exists(), page
    api = (tmp_path / "site" / "api" / "compress" / "index.html").read_text()
    assert "make_student" in api and "fold" in api  # the reference is generated from docstrings


@pytest.mark.slow
def test_a_broken_link_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    for p in (copy / "docs" / "api").glob("*.md"):  # keep this build fast: no API pages
        p.write_text("# API\n")
    (copy / "docs" / "install.md").write_text((copy / "docs" / "install.md").read_text() + "\nSee [nowhere](missing.md).\n")
    res = _build(copy, tmp_path / "site")
    assert res.returncode != 0 and "missing.md" in (res.stderr + res.stdout)
