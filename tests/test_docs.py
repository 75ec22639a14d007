"""The documentation site builds in strict mode (broken links and bad docstrings fail it), with
every tutorial and course notebook run at build time and shown with its outputs (a failing cell
fails the build: this is where the notebooks are executed in CI, in their short mode)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("mkdocs_jupyter")
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb")) + sorted((ROOT / "tutorials" / "course").glob("*.ipynb"))


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINIDISTILL_TUTORIAL_SHORT": "1"}  # the notebooks' kernels inherit it
    # run from the site's parent: mkdocs-jupyter keeps a cache of executed notebooks in ./.cache,
    # which would let an unchanged notebook skip running against changed library code
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=site.parent, capture_output=True, text=True, timeout=3000, env=env)


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    res = _build(ROOT, tmp_path / "site")
    assert res.returncode == 0, res.stderr[-3000:]
    for page in ("install", "demo", "architecture", "wid", "theseus", "adapters", "minialbert", "distillation",
                 "course/module3", "api/compress"):
        assert (tmp_path / "site" / page / "index.html").exists(), page
    api = (tmp_path / "site" / "api" / "compress" / "index.html").read_text()
    assert "make_student" in api and "fold" in api  # the reference is generated from docstrings
    for nb in NOTEBOOKS:  # every notebook is a page, run, with outputs
        page = tmp_path / "site" / nb.relative_to(ROOT).with_suffix("") / "index.html"
        assert page.is_file(), nb.name
        assert page.read_text().count('class="jp-OutputArea-child') >= 1, f"{nb.name} was rendered without outputs"
    report = (tmp_path / "site" / "tutorials" / "11_compression_report" / "index.html").read_text()
    assert "data:image/png" in report  # its figure is in the page


@pytest.mark.slow
def test_a_broken_link_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    for p in (copy / "docs" / "api").glob("*.md"):  # keep this build fast: no API pages
        p.write_text("# API\n")
    yml = (copy / "mkdocs.yml").read_text()
    (copy / "mkdocs.yml").write_text(yml.replace("execute: true", "execute: false"))  # nor notebook runs
    shutil.rmtree(copy / "docs" / "tutorials")
    shutil.copytree(ROOT / "tutorials", copy / "tutorials")  # docs/tutorials links ../tutorials
    (copy / "docs" / "tutorials").symlink_to("../tutorials")
    (copy / "docs" / "install.md").write_text((copy / "docs" / "install.md").read_text() + "\nSee [nowhere](missing.md).\n")
    res = _build(copy, tmp_path / "site")
    assert res.returncode != 0 and "missing.md" in (res.stderr + res.stdout)
