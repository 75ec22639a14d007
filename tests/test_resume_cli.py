"""A killed ``finetune`` / ``distill`` run continues when the same command is run again, and ends
on the parameters of the run that was never killed: for plain fine-tuning, WID (masks and
pruning rounds), BERT-of-Theseus (the gates' generator) and the staged XtremeDistil recipe
(finished phases skipped, the phase in progress resumed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minidistill as md
from minidistill.cli import main
from minidistill.fileio import load_weights

pytestmark = pytest.mark.checkpoint

COMMON = ["--data.max_train_examples=64", "--data.max_eval_examples=32", "--train.max_steps=8",
          "--train.batch_size=16", "--train.max_length=24", "--train.checkpoint_every=2", "--train.progress=false",
          "--train.eval_every=4"]


@pytest.fixture
def teacher_dir(tiny_teacher_dir):
    return tiny_teacher_dir


def _kill_after_checkpoint(monkeypatch, at_call: int):
    """Make the ``at_call``-th checkpoint write the last thing the run does."""
    real, calls = md.train.Trainer.save_checkpoint, []

    def dying(self, directory=None):
        path = real(self, directory)
        calls.append(path)
        if len(calls) == at_call:
            raise RuntimeError("killed")
        return path
    monkeypatch.setattr(md.train.Trainer, "save_checkpoint", dying)
    return calls


def _count_updates(monkeypatch) -> list:
    """A list that gets one entry per optimiser step."""
    real, seen = md.train.AdamW.step, []

    def counting(self):
        seen.append(self.step_count)
        return real(self)
    monkeypatch.setattr(md.train.AdamW, "step", counting)
    return seen


RUNS = {
    "finetune": ["finetune"],
    "wid": ["distill", "--student.kind=wid", "--student.hidden_size=16", "--student.num_attention_heads=2",
            "--student.intermediate_size=32", "--wid.rounds=2"],
    "theseus": ["distill", "--student.kind=theseus", "--student.num_layers=2", "--theseus.replace=linear"],
    "xtremedistil": ["distill", "--student.kind=bilstm", "--bilstm.hidden_size=8", "--bilstm.embedding_size=16",
                     "--recipe=xtremedistil"],
}


@pytest.mark.parametrize("kind,kill_at", [("finetune", 2), pytest.param("wid", 2, marks=pytest.mark.slow),
                                          pytest.param("theseus", 3, marks=pytest.mark.slow),
                                          pytest.param("xtremedistil", 5, marks=pytest.mark.slow)])
def test_a_killed_run_continues_to_the_uninterrupted_result(kind, kill_at, tmp_path, teacher_dir, monkeypatch, capsys):
    source = "--model.path" if kind == "finetune" else "--teacher.path"
    cmd = [*RUNS[kind], f"{source}={teacher_dir}", *COMMON]
    steps = _count_updates(monkeypatch)
    assert main([*cmd, f"--output_dir={tmp_path / 'whole'}"]) == 0
    total = len(steps)
    with monkeypatch.context() as m:
        calls = _kill_after_checkpoint(m, kill_at)
        assert main([*cmd, f"--output_dir={tmp_path / 'killed'}"]) == 2
        assert "killed" in capsys.readouterr().err and len(calls) == kill_at
    assert not (tmp_path / "killed" / "config.json").exists()  # nothing saved but checkpoints
    steps.clear()
    assert main([*cmd, f"--output_dir={tmp_path / 'killed'}"]) == 0
    assert "continuing the killed run" in capsys.readouterr().out
    assert 0 < len(steps) < total  # it continued: the steps before the checkpoint were not run again
    whole, resumed = load_weights(tmp_path / "whole"), load_weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert a["dev"] == b["dev"] and a["steps"] == b["steps"]
    assert not (tmp_path / "killed" / "checkpoints").exists()  # removed once the model is saved


@pytest.mark.slow
def test_checkpoints_of_another_run_are_not_continued(tmp_path, teacher_dir, monkeypatch, capsys):
    cmd = ["finetune", f"--model.path={teacher_dir}", *COMMON, f"--output_dir={tmp_path / 'out'}"]
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 1)
        assert main(cmd) == 2
    capsys.readouterr()
    assert main([*cmd, "--train.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints of another run" in err and "train" in err and "--resume=false" in err
    assert main([*cmd, "--train.lr=1e-3", "--resume=false"]) == 0  # afresh
    assert main(["finetune", f"--model.path={teacher_dir}", *COMMON, "--resume=true",
                 f"--output_dir={tmp_path / 'other'}"]) == 2
    assert "holds no checkpoints of this run" in capsys.readouterr().err
