"""The tutorials run top to bottom (so they never drift from the API)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_TUTORIAL_SHORT", "1")  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_are_tutorials():
    assert {p.stem for p in NOTEBOOKS} >= {"01_tensors_and_autograd", "02_bert_from_scratch", "03_finetune_a_teacher",
                                             "04_knowledge_distillation", "05_xtremedistil_bilstm",
                                             "06_wid_and_fold", "07_theseus", "08_compacter_kronecker",
                                             "09_minialbert", "10_compact_memory", "11_compression_report"}
