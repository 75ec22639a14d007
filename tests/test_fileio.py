"""The bottom layer's file writes: atomic, and with the permissions a plain ``open`` gives."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from minidistill.fileio import atomic_path, load_weights, save_weights, write_json


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")  # the reference: what open() gives under this umask
        write_json(tmp_path / "a.json", {"a": 1})
        save_weights(tmp_path / "model.safetensors", {"w": np.ones((2, 2), dtype=np.float32)})
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.json", "model.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name
    np.testing.assert_array_equal(load_weights(tmp_path)["w"], np.ones((2, 2)))


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-save")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind
