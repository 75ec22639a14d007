"""Data loading: GLUE layouts, local files, the rotten_tomatoes splits, batching, and the
errors bad files and configs give."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minidistill.config_io import ConfigError, load_config
from minidistill.data import DataError, Tokenizer, load_dataset, load_file, load_glue, rotten_tomatoes_split
from minidistill.train import TrainConfig


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_glue_layouts(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\na gripping film \t1\ndull \"and\" flat\t0\n")
    _write(tmp_path / "CoLA" / "train.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more he reads, the.\n")
    _write(tmp_path / "MRPC" / "dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said hi.\tHe greeted.\n0\t3\t4\tA cat.\tA dog.\n")
    _write(tmp_path / "STS-B" / "dev.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
           "0\tmain\tf\t2012\t0\tnone\tnone\tA man plays.\tA man is playing.\t4.8\n1\tmain\tf\t2012\t1\tnone\tnone\tA cat.\tA car.\t0.5\n")
    _write(tmp_path / "MNLI" / "dev_matched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label\n"
           "0\t1\t1a\tfic\tIt rains.\tIt is wet.\tentailment\n1\t2\t2a\tfic\tIt rains.\tIt is dry.\tcontradiction\n")
    sst = load_glue("SST-2", tmp_path, "dev")
    assert sst.texts == ["a gripping film ", 'dull "and" flat'] and sst.labels.tolist() == [1, 0]
    cola = load_glue("cola", tmp_path / "CoLA", "train")  # the task's own folder works too
    assert cola.texts[1] == "The more he reads, the." and cola.labels.tolist() == [1, 0]
    assert cola.task.metrics[0] == "matthews"
    mrpc = load_glue("mrpc", tmp_path, "dev")
    assert mrpc.text_pairs == ["He greeted.", "A dog."] and mrpc.task.metrics == ("f1", "accuracy")
    sts = load_glue("stsb", tmp_path, "dev")
    assert sts.task.is_regression and sts.labels.dtype == np.float32 and sts.labels.tolist() == pytest.approx([4.8, 0.5])
    mnli = load_glue("mnli", tmp_path, "dev")
    assert mnli.labels.tolist() == [0, 2] and mnli.task.num_labels == 3
    with pytest.raises(DataError, match="no split 'test'"):
        load_glue("sst2", tmp_path, "test")
    with pytest.raises(DataError, match="unknown GLUE task"):
        load_glue("squad", tmp_path)


def test_local_formats(tmp_path):
    rows = [{"text": "nice", "label": "pos"}, {"text": "bad", "label": "neg"}]
    _write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write(tmp_path / "d.csv", "text,label\nnice,pos\nbad,neg\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["nice", "bad"], "label": ["pos", "neg"]}), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        d = load_file(tmp_path / name, labels=("neg", "pos"))
        assert d.texts == ["nice", "bad"] and d.labels.tolist() == [1, 0], name
    unlabelled = load_file(tmp_path / "d.csv", label_column=None)
    assert unlabelled.labels is None and len(unlabelled) == 2


def test_bad_files_name_the_file_line_and_column(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is empty"):
        load_file(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match=r"bad\.csv, line 3: not valid UTF-8"):
        load_file(_write(tmp_path / "bad.csv", b"text,label\nok,1\n\xff\xfe broken,0\n"))
    with pytest.raises(DataError, match=r"missing column 'label'; the file has columns \['text', 'score'\]"):
        load_file(_write(tmp_path / "cols.csv", "text,score\nhi,1\n"))
    with pytest.raises(DataError, match=r"labels\.csv, line 3: unknown label 'maybe'"):
        load_file(_write(tmp_path / "labels.csv", "text,label\nhi,yes\nho,maybe\n"), labels=("no", "yes"))
    with pytest.raises(DataError, match="cannot tell the format"):
        load_file(_write(tmp_path / "x.txt", "hello"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imdb")


def test_rotten_tomatoes_splits_are_canonical():
    splits = {s: load_dataset("rotten_tomatoes", s) for s in ("train", "dev", "test")}
    sizes = {s: len(d) for s, d in splits.items()}
    total = sum(sizes.values())
    assert 12000 < total < 13000 and 0.08 < sizes["test"] / total < 0.12 and 0.08 < sizes["dev"] / total < 0.12
    for s, d in splits.items():
        assert all(rotten_tomatoes_split(t) == s for t in d.texts[:200])
        assert set(np.unique(d.labels)) == {0, 1}
    assert not set(splits["train"].texts) & set(splits["test"].texts)
    assert len(set(splits["train"].texts)) == sizes["train"]  # duplicates dropped


def test_bucketed_batches_are_seeded_and_cover_the_data(minilm_path):
    tok = Tokenizer.from_pretrained(minilm_path)
    data = load_dataset("rotten_tomatoes", "dev")
    a = [b["input_ids"].tolist() for b in data.batches(tok, 32, 64, shuffle=True, seed=1)]
    b = [b["input_ids"].tolist() for b in data.batches(tok, 32, 64, shuffle=True, seed=1)]
    c = [b["input_ids"].tolist() for b in data.batches(tok, 32, 64, shuffle=True, seed=2)]
    assert a == b and a != c
    order = data.batch_order(32, [len(e[0]) for e in data.encode(tok, 64)], True, 1)
    assert sorted(np.concatenate(order).tolist()) == list(range(len(data)))
    padded = sum(x.shape[0] * x.shape[1] for x in (b["input_ids"] for b in data.batches(tok, 32, 64, shuffle=True)))
    unbucketed = sum(x.shape[0] * x.shape[1] for x in (b["input_ids"] for b in data.batches(tok, 32, 64, shuffle=True, bucket=False)))
    assert padded < 0.8 * unbucketed  # bucketing removes most padding


def test_config_errors_name_the_key(tmp_path):
    from minidistill.cli import FinetuneConfig

    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        load_config(FinetuneConfig, overrides=["--train.lrr=1e-4"])
    with pytest.raises(ConfigError, match="'train.lr' must be a number, got 'fast'"):
        load_config(FinetuneConfig, overrides=["--train.lr", "fast"])
    toml = _write(tmp_path / "run.toml", '[train]\nlr = 3e-5\nmax_steps = 7\n[data]\nmax_train_examples = 48\n')
    cfg = load_config(FinetuneConfig, toml, ["--train.max_steps=9"])
    assert cfg.train.lr == 3e-5 and cfg.train.max_steps == 9 and cfg.data.max_train_examples == 48
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(FinetuneConfig, _write(tmp_path / "bad.toml", "[train\nlr=1"))
    with pytest.raises(ValueError, match="train.lr must be a non-negative number"):
        TrainConfig(lr=float("nan"))


def test_list_and_tuple_keys_are_typed_from_the_command_line():
    """``--train.betas=0.9,0.99`` gives numbers (it gave strings, which AdamW cannot use), a
    wrong count or a non-number is a ConfigError naming the key, and a tuple of names stays text."""
    from minidistill.cli import FinetuneConfig

    cfg = load_config(FinetuneConfig, None, ["--train.betas=0.9,0.99", "--data.labels=1,2",
                                             "--compressed_activations.exclude=attention.output.dense,classifier"])
    assert cfg.train.betas == (0.9, 0.99) and cfg.data.labels == ["1", "2"]
    assert cfg.compressed_activations.exclude == ("attention.output.dense", "classifier")
    with pytest.raises(ConfigError, match="'train.betas' needs 2 values"):
        load_config(FinetuneConfig, None, ["--train.betas=0.9"])
    with pytest.raises(ConfigError, match="'train.betas' must be a number"):
        load_config(FinetuneConfig, None, ["--train.betas=0.9,x"])
