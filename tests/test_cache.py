"""The teacher-output cache: equals the teacher, resumes after an interruption to the same
files as a build in one go, and refuses a stale teacher or other data."""

from __future__ import annotations

import numpy as np
import pytest

import minidistill as md
from minidistill.data import TeacherCache, Tokenizer, load_dataset
from minidistill.fileio import CheckpointError

from .conftest import tiny_bert



@pytest.fixture(scope="module")
def setup(minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    data = load_dataset("rotten_tomatoes", "dev").select(range(100)).without_labels()
    with md.use_backend("numba"):
        teacher = tiny_bert(0, layers=2)
    teacher.eval()
    return tok, data, teacher


def test_cache_equals_the_teacher_and_resumes_identically(setup, tmp_path):
    tok, data, teacher = setup
    whole = TeacherCache.build(tmp_path / "whole", teacher, tok, data, max_length=32, hidden_states=(0, 2), batch_size=16)
    assert whole.complete

    class Killed(Exception):
        pass

    def die(done):
        if done >= 48:
            raise Killed

    with pytest.raises(Killed):
        TeacherCache.build(tmp_path / "part", teacher, tok, data, max_length=32, hidden_states=(0, 2), batch_size=16,
                           _after_batch=die)
    part = TeacherCache(tmp_path / "part")
    assert part.meta["done"] == 48 and not part.complete
    with pytest.raises(CheckpointError, match="incomplete"):
        part.check(teacher, data, 32)
    resumed = TeacherCache.build(tmp_path / "part", teacher, tok, data, max_length=32, hidden_states=(0, 2), batch_size=16)
    assert resumed.complete
    for name in ("logits.f32", "hidden_0.f32", "hidden_2.f32"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "part" / name).read_bytes(), name

    idx = [3, 50, 99]
    got = resumed.lookup(idx, width=32)
    batch = data.collate(data.encode(tok, 32), idx, tok.pad_token_id)
    with md.no_grad():
        out = teacher(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)
    np.testing.assert_allclose(got["logits"], out.logits.numpy(), atol=1e-5)
    w = batch["input_ids"].shape[1]
    np.testing.assert_allclose(got["hidden_states"][2][:, :w], out.hidden_states[2].numpy(), atol=1e-5)
    resumed.check(teacher, data, 32)


def test_stale_cache_is_refused(setup, tmp_path):
    tok, data, teacher = setup
    TeacherCache.build(tmp_path / "c", teacher, tok, data, max_length=32, batch_size=32)
    with md.use_backend("numba"):
        other = tiny_bert(1, layers=2)
    with pytest.raises(CheckpointError, match="another teacher"):
        TeacherCache.build(tmp_path / "c", other, tok, data, max_length=32, batch_size=32)
    with pytest.raises(CheckpointError, match="other data"):
        TeacherCache.build(tmp_path / "c", teacher, tok, data.select(range(50)), max_length=32, batch_size=32)
    with pytest.raises(CheckpointError, match="another teacher"):
        TeacherCache(tmp_path / "c").check(other, data, 32)
