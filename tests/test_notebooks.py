"""The tutorials: all there, and all in the docs site, whose build runs every one of them top to
bottom (tests/test_docs.py), so they never drift from the API."""

from __future__ import annotations

from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


def test_there_are_tutorials():
    assert {p.stem for p in NOTEBOOKS} >= {"01_tensors_and_autograd", "02_bert_from_scratch", "03_finetune_a_teacher",
                                             "04_knowledge_distillation", "05_xtremedistil_bilstm",
                                             "06_wid_and_fold", "07_theseus", "08_compacter_kronecker",
                                             "09_minialbert", "10_compact_memory", "11_compression_report",
                                             "12_task_agnostic", "13_ner_and_qa", "14_quantize_and_export"}


def test_every_notebook_is_a_page_of_the_docs_site():
    """The site's nav lists every tutorial and course notebook (the docs build runs them)."""
    nav = (Path(__file__).resolve().parents[1] / "mkdocs.yml").read_text()
    root = Path(__file__).resolve().parents[1]
    for nb in NOTEBOOKS + sorted((root / "tutorials" / "course").glob("*.ipynb")):
        assert f": {nb.relative_to(root)}" in nav, f"{nb.name} is not in mkdocs.yml's nav"
