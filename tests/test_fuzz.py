"""Fuzzing the public loaders with hypothesis: every malformed input gives a clear error of the
documented type — never a hang, an interpreter crash, another exception type, or a silently
wrong model.

Cases per run (``max_examples``): config JSON 150, safetensors bytes 150, header edits 100,
data files 150, CLI overrides 200; each test also asserts that its cases really ran.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minidistill.cli import DistillConfig, FinetuneConfig  # noqa: E402
from minidistill.config_io import ConfigError, load_config  # noqa: E402
from minidistill.data.datasets import DataError, load_file  # noqa: E402
from minidistill.models import BertConfig, BertForSequenceClassification  # noqa: E402
from minidistill.fileio import CheckpointError, load_weights, save_weights  # noqa: E402

def fast(n: int):
    """``n`` cases, no per-case deadline (the machine is shared), reproducible across runs."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COUNTS: dict = {}


def _count(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=6)
config_keys = st.sampled_from(["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "max_position_embeddings", "type_vocab_size", "hidden_act",
                               "layer_norm_eps", "num_labels", "model_type", "id2label", "pad_token_id", "bogus"])


@fast(150)
@given(st.dictionaries(config_keys, json_values, max_size=6))
def test_config_json_is_accepted_or_refused_clearly(tmp_path_factory, data):
    _count("config")
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "config.json").write_text(json.dumps(data))
    try:
        cfg = BertConfig.from_dict(json.loads((folder / "config.json").read_text()))
    except (CheckpointError, ValueError, ConfigError) as e:
        assert str(e)  # a message, naming the problem
        return
    # accepted: every size is a positive integer and the heads divide the width
    assert cfg.hidden_size > 0 and cfg.num_attention_heads > 0 and cfg.hidden_size % cfg.num_attention_heads == 0
    assert cfg.vocab_size > 0 and cfg.num_hidden_layers >= 0


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=8)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


@fast(150)
@given(st.binary(max_size=300))
def test_random_bytes_are_not_weights(tmp_path_factory, blob):
    _count("bytes")
    folder = tmp_path_factory.mktemp("bad")
    (folder / "model.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError, match="corrupt or not safetensors|model.safetensors"):
        load_weights(folder)


@fast(100)
@given(st.data())
def test_edited_headers_are_refused_or_read_exactly(good_checkpoint, tmp_path_factory, data):
    """Change the header length, a dtype, a shape or an offset, or cut the file: the loader
    refuses it, or (if the edit is still a valid file) returns exactly what the file says."""
    _count("header")
    raw = (good_checkpoint / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    kind = data.draw(st.sampled_from(["length", "dtype", "shape", "offsets", "truncate", "json"]))
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    if kind == "length":
        blob = struct.pack("<Q", data.draw(st.integers(0, 2**40))) + raw[8:]
    elif kind == "truncate":
        blob = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "json":
        text = raw[8:8 + n].decode()
        cut = data.draw(st.integers(1, len(text) - 1))
        blob = struct.pack("<Q", cut) + text[:cut].encode() + body
    else:
        if kind == "dtype":
            header[name]["dtype"] = data.draw(st.sampled_from(["F16", "I8", "BOOL", "X9", "F64"]))
        elif kind == "shape":
            header[name]["shape"] = data.draw(st.lists(st.integers(-2, 50), max_size=3))
        else:
            header[name]["data_offsets"] = data.draw(st.lists(st.integers(-5, len(body) + 50), min_size=0, max_size=3))
        h = json.dumps(header).encode()
        blob = struct.pack("<Q", len(h)) + h + body
    folder = tmp_path_factory.mktemp("edit")
    (folder / "model.safetensors").write_bytes(blob)
    try:
        weights = load_weights(folder)
    except CheckpointError:
        return
    # still a valid file: what came back is what the header describes
    for key, arr in weights.items():
        spec = header.get(key) if kind not in ("length", "truncate", "json") else None
        if spec is not None:
            assert list(arr.shape) == list(spec["shape"])


@pytest.mark.slow
@fast(150)
@given(st.sampled_from(["csv", "tsv", "jsonl"]), st.text(max_size=200))
def test_data_files_load_or_fail_with_a_data_error(tmp_path_factory, fmt, text):
    _count("data")
    path = tmp_path_factory.mktemp("data") / f"f.{fmt}"
    path.write_text(text, encoding="utf-8")
    try:
        ds = load_file(path)
    except (DataError, FileNotFoundError) as e:
        assert str(e)
        return
    assert len(ds) == len(ds.texts) and all(isinstance(t, str) for t in ds.texts)
    if ds.labels is not None:
        assert len(ds.labels) == len(ds.texts)


label_cells = st.one_of(st.integers(-3, 12).map(str), st.sampled_from(["", " ", "NA", "nan", "1.0", "None", "pos", " neg "]),
                        st.text(alphabet="abcxyz019._-", min_size=1, max_size=4))


@pytest.mark.slow
@fast(150)
@given(st.lists(label_cells, min_size=1, max_size=12), st.sampled_from(["csv", "tsv"]))
def test_label_columns_keep_their_text_and_name_a_missing_label(tmp_path_factory, cells, fmt):
    """Labels are read as written (``1`` stays ``"1"``, ``NA`` is a label, not a missing value);
    an empty cell is an error naming the file, its line and the column."""
    _count("labels")
    sep = "\t" if fmt == "tsv" else ","
    path = tmp_path_factory.mktemp("labels") / f"train.{fmt}"
    path.write_text("sentence" + sep + "label\n" + "".join(f"text {i}{sep}{c}\n" for i, c in enumerate(cells)),
                    encoding="utf-8")
    blank = [i for i, c in enumerate(cells) if not c.strip()]
    try:
        ds = load_file(path, text_column="sentence")
    except DataError as e:
        assert blank, e
        assert f"line {blank[0] + 2}: missing label in column 'label'" in str(e) and str(path) in str(e)
        return
    assert not blank
    assert set(ds.task.labels) == {c.strip() for c in cells}
    assert [ds.task.labels[k] for k in ds.labels] == [c.strip() for c in cells]


override_keys = st.sampled_from(["train.lr", "train.epochs", "train.batch_size", "train.optimizer", "compressed_activations.rank",
                                 "train.warmup_ratio", "data.task", "student.kind", "objectives.temperature", "nope",
                                 "train", "train.lr.x", "student.num_layers", "train.max_steps"])
override_values = st.one_of(st.text(max_size=6), st.integers(-5, 5).map(str), st.sampled_from(["nan", "inf", "-1", "1e9"]))


@fast(200)
@given(st.lists(st.tuples(override_keys, override_values), max_size=4), st.sampled_from([FinetuneConfig, DistillConfig]))
def test_cli_overrides_parse_or_fail_with_a_config_error(pairs, cls):
    _count("cli")
    args = [f"--{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(cls, None, args)
    except ConfigError as e:
        assert str(e)
        return
    assert cfg.train.lr >= 0 and cfg.train.batch_size >= 1


def test_the_fuzzers_ran_their_cases():
    """Runs last in this file (pytest keeps file order): every fuzzer ran its cases."""
    want = {"config": 150, "bytes": 150, "header": 100, "data": 150, "labels": 150, "cli": 200}
    for name, n in want.items():
        if name in COUNTS:  # absent when the test was deselected
            assert COUNTS[name] >= n, (name, COUNTS[name])
