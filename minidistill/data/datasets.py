"""Labelled and unlabelled text: local files, GLUE folders and the packaged ``rotten_tomatoes``.

* :func:`load_file` reads CSV / TSV / JSON lines / parquet through the ``datasets`` package,
  after checking the file (exists, not empty, valid UTF-8, has the columns, known labels) so
  that every error names the file, the line and the column.
* :func:`load_glue` reads GLUE's own TSV layout from a folder the user downloaded.
* :func:`load_dataset` returns the packaged ``rotten_tomatoes`` task or a GLUE task by name.

A :class:`TextDataset` holds texts, optional second segments and labels, plus the task's
label names and metrics; :meth:`TextDataset.batches` tokenises once and yields dynamically
padded, length-bucketed batches in a deterministic order given a seed.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data file is missing, empty, undecodable or does not fit the task."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task's files look like and how it is scored.

    ``labels`` lists the label names in id order (None for regression); ``label_map`` maps
    raw values found in files to ids when they are not the names themselves.
    """

    name: str
    text_column: str
    text_pair_column: str | None
    label_column: str | None
    labels: tuple | None
    metrics: tuple
    files: dict = field(default_factory=dict)  # split → file name (GLUE)
    header: bool = True
    columns: tuple | None = None  # column names for header-less files
    label_map: dict | None = None
    kind: str = "sequence"  # "sequence" (one label per example), "token" (one per word) or "qa" (answer spans)
    scheme: str | None = None  # token tasks: the tag scheme (BIO / BIOES)

    @property
    def is_regression(self) -> bool:
        """True when the label is a real number (STS-B)."""
        return self.labels is None and self.kind == "sequence"

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression; 2 for QA: the start and end logits)."""
        if self.kind == "qa":
            return 2
        return 1 if self.labels is None else len(self.labels)


_NLI3 = ("entailment", "neutral", "contradiction")
GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "sentence", None, "label", ("0", "1"), ("matthews", "accuracy"),
                     {"train": "train.tsv", "dev": "dev.tsv"}, header=False,
                     columns=("source", "label", "original_label", "sentence")),
    "sst2": TaskSpec("sst2", "sentence", None, "label", ("0", "1"), ("accuracy",),
                     {"train": "train.tsv", "dev": "dev.tsv"}),
    "mrpc": TaskSpec("mrpc", "#1 String", "#2 String", "Quality", ("0", "1"), ("f1", "accuracy"),
                     {"train": "train.tsv", "dev": "dev.tsv"}),
    "qqp": TaskSpec("qqp", "question1", "question2", "is_duplicate", ("0", "1"), ("f1", "accuracy"),
                    {"train": "train.tsv", "dev": "dev.tsv"}),
    "stsb": TaskSpec("stsb", "sentence1", "sentence2", "score", None, ("pearson", "spearman"),
                     {"train": "train.tsv", "dev": "dev.tsv"}),
    "mnli": TaskSpec("mnli", "sentence1", "sentence2", "gold_label", _NLI3, ("accuracy",),
                     {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"}),
    "qnli": TaskSpec("qnli", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",),
                     {"train": "train.tsv", "dev": "dev.tsv"}),
    "rte": TaskSpec("rte", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",),
                    {"train": "train.tsv", "dev": "dev.tsv"}),
    "wnli": TaskSpec("wnli", "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",),
                     {"train": "train.tsv", "dev": "dev.tsv"}),
}
GLUE_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
                "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
ROTTEN_TOMATOES = TaskSpec("rotten_tomatoes", "text", None, "label", ("rotten", "fresh"), ("accuracy", "f1"))


@dataclass
class TextDataset:
    """Texts (and optional second segments) with optional labels.

    Attributes:
        texts: first segments. text_pairs: second segments or None.
        labels: int64 class ids, float32 scores (regression) or None (unlabelled).
        task: the :class:`TaskSpec` (label names, metrics).
    """

    texts: list
    text_pairs: list | None = None
    labels: np.ndarray | None = None
    task: TaskSpec | None = None

    def __post_init__(self):
        n = len(self.texts)
        if self.text_pairs is not None and len(self.text_pairs) != n:
            raise DataError(f"{n} texts but {len(self.text_pairs)} text pairs")
        if self.labels is not None and len(self.labels) != n:
            raise DataError(f"{n} texts but {len(self.labels)} labels")
        self._encoded = None

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices) -> "TextDataset":
        """A dataset of the rows at ``indices``."""
        idx = [int(i) for i in indices]
        return TextDataset(
            [self.texts[i] for i in idx],
            None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            None if self.labels is None else self.labels[idx],
            self.task,
        )

    def without_labels(self) -> "TextDataset":
        """The same texts, unlabelled (transfer data for distillation)."""
        return TextDataset(list(self.texts), self.text_pairs, None, self.task)

    # ---------------------------------------------------------------- batching
    def encode(self, tokenizer, max_length: int) -> list:
        """Token ids and segment ids of every example, truncated to ``max_length`` (cached)."""
        key = (id(tokenizer), max_length)
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, tokenizer.encode_unpadded(self.texts, self.text_pairs, max_length))
        return self._encoded[1]

    def batch_order(self, batch_size: int, lengths, shuffle: bool, seed: int, epoch: int = 0,
                    bucket: bool = True) -> list[np.ndarray]:
        """Index batches for one epoch (see :func:`batch_order`)."""
        return batch_order(len(self), batch_size, lengths, shuffle, seed, epoch, bucket)

    def collate(self, encoded, indices, pad_id: int) -> dict:
        """Pad the examples at ``indices`` to the longest of them.

        The batch holds the model inputs (see :func:`model_inputs`), ``example_ids`` (B,)
        (the rows' positions in this dataset, which key a teacher cache) and ``labels``.
        """
        rows = [encoded[i] for i in indices]
        width = max(len(ids) for ids, _ in rows)
        b = len(rows)
        input_ids = np.full((b, width), pad_id, dtype=np.int64)
        token_type_ids = np.zeros((b, width), dtype=np.int64)
        attention_mask = np.zeros((b, width), dtype=np.int64)
        for r, (ids, types) in enumerate(rows):
            input_ids[r, :len(ids)] = ids
            token_type_ids[r, :len(ids)] = types
            attention_mask[r, :len(ids)] = 1
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                 "example_ids": np.asarray(indices, dtype=np.int64)}
        if self.labels is not None:
            batch["labels"] = self.labels[np.asarray(indices)]
        return batch

    def batches(self, tokenizer, batch_size: int = 32, max_length: int = 128, shuffle: bool = False,
                seed: int = 0, epoch: int = 0, bucket: bool = True, skip: int = 0):
        """Yield padded batches (dicts of int64 arrays, with ``labels`` when labelled).

        ``skip`` drops the first batches of the epoch's order (used when resuming).
        """
        encoded = self.encode(tokenizer, max_length)
        order = self.batch_order(batch_size, [len(e[0]) for e in encoded], shuffle, seed, epoch, bucket)
        for idx in order[skip:]:
            yield self.collate(encoded, idx, tokenizer.pad_token_id)

    def num_batches(self, batch_size: int, tokenizer=None, max_length: int | None = None) -> int:
        """Batches per epoch (the tokenizer and length are accepted for the windowed datasets'
        sake: here one example is one row)."""
        return (len(self) + batch_size - 1) // batch_size


def batch_order(n: int, batch_size: int, lengths, shuffle: bool, seed: int, epoch: int = 0,
                bucket: bool = True) -> list[np.ndarray]:
    """Index batches of ``n`` rows for one epoch.

    With ``shuffle``, rows are permuted by a generator seeded from ``(seed, epoch)``; with
    ``bucket``, each window of 50 batches is sorted by length before being cut into batches
    (less padding), and the batches are then shuffled again.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    if bucket and shuffle:
        window = batch_size * 50
        lengths = np.asarray(lengths)
        chunks = [order[i:i + window] for i in range(0, n, window)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks]) if chunks else order
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if bucket and shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class WindowedDataset:
    """Batching over model *windows* rather than examples, for datasets whose examples become
    one or more windows (long sentences, long contexts): subclasses define ``encode(tokenizer,
    max_length)`` (the windows, cached in ``self._encoded``) and ``collate``."""

    _encoded = None

    def batch_order(self, batch_size: int, lengths, shuffle: bool, seed: int, epoch: int = 0,
                    bucket: bool = True) -> list[np.ndarray]:
        """Window index batches for one epoch (see :func:`batch_order`)."""
        return batch_order(len(lengths), batch_size, lengths, shuffle, seed, epoch, bucket)

    def batches(self, tokenizer, batch_size: int = 32, max_length: int = 128, shuffle: bool = False,
                seed: int = 0, epoch: int = 0, bucket: bool = True, skip: int = 0):
        """Yield padded window batches (see ``collate``); ``skip`` drops the first batches."""
        encoded = self.encode(tokenizer, max_length)
        order = self.batch_order(batch_size, [len(e[0]) for e in encoded], shuffle, seed, epoch, bucket)
        for idx in order[skip:]:
            yield self.collate(encoded, idx, tokenizer.pad_token_id)

    @staticmethod
    def pad_windows(rows, indices, pad_id: int) -> dict:
        """The model inputs of windows ``rows`` (each starts with its ids and type ids), padded to
        the longest, and ``example_ids`` (the window numbers ``indices``)."""
        width = max(len(r[0]) for r in rows)
        b = len(rows)
        batch = {"input_ids": np.full((b, width), pad_id, dtype=np.int64),
                 "token_type_ids": np.zeros((b, width), dtype=np.int64),
                 "attention_mask": np.zeros((b, width), dtype=np.int64),
                 "example_ids": np.asarray(indices, dtype=np.int64)}
        for r, row in enumerate(rows):
            n = len(row[0])
            batch["input_ids"][r, :n] = row[0]
            batch["token_type_ids"][r, :n] = row[1]
            batch["attention_mask"][r, :n] = 1
        return batch

    def num_batches(self, batch_size: int, tokenizer=None, max_length: int | None = None) -> int:
        """Batches per epoch: of windows when the tokenizer and length are given (or the windows
        were made already), else of examples (a lower bound)."""
        if tokenizer is not None and max_length is not None:
            n = len(self.encode(tokenizer, max_length))
        elif self._encoded is not None:
            n = len(self._encoded[1])
        else:
            n = len(self)
        return (n + batch_size - 1) // batch_size


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def take_rows(batch: dict, rows) -> dict:
    """The rows ``rows`` (a slice or indices) of a padded batch, with the padding columns no
    kept row uses cut off (a micro-batch or a data-parallel shard of a batch). Arrays of
    width T (the token axis) are cut on that axis; per-example arrays are only sliced."""
    width = batch["input_ids"].shape[1]
    out = {k: v[rows] for k, v in batch.items()}
    mask = out["attention_mask"]
    used = max(1, int(mask.sum(axis=1).max())) if len(mask) else width
    if used < width:
        out = {k: (v[:, :used] if v.ndim >= 2 and v.shape[1] == width else v) for k, v in out.items()}
    return out


def split_rows(batch: dict, parts: int) -> list:
    """``batch`` cut into at most ``parts`` consecutive micro-batches of ``ceil(B / parts)``
    rows (the last may be smaller; none is empty), each with its own padding trimmed."""
    n = len(batch["input_ids"])
    size = max(1, -(-n // max(1, parts)))
    return [take_rows(batch, slice(lo, lo + size)) for lo in range(0, n, size)]


def model_inputs(batch: dict) -> dict:
    """The entries of a batch a model's forward takes (not labels or example ids)."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


# -------------------------------------------------------------------- loading
def _check_text_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {path} is empty")
    if path.suffix != ".parquet":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DataError(f"{path}, line {line}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


def iter_json_lines(path: Path, required: str):
    """``(line number, object)`` for every non-blank line of a JSON-lines file, streamed; an
    invalid line or one without the ``required`` field is a :class:`DataError` naming both."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or required not in row:
                fields = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise DataError(f"{path}, line {n}: no {required!r} field (fields: {fields})")
            yield n, row


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if suffix not in formats:
        raise DataError(f"{path}: cannot tell the format from {suffix!r}; pass format='csv'|'tsv'|'json'|'parquet'")
    return formats[suffix]


def _read_table(path: Path, fmt: str, header: bool = True, columns=None) -> dict[str, list]:
    """Read a table with the ``datasets`` package; returns column → list.

    CSV / TSV cells are read as text, exactly as written (no number guessing: a label ``1``
    stays ``"1"``, an empty cell is ``""``, never NaN). The ``datasets`` package parses into a
    temporary folder that is deleted afterwards: no copy of the user's data is kept on disk.
    """
    import tempfile

    import datasets as hf_datasets

    kwargs = {}
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else ","
        kwargs["delimiter"] = delimiter
        if fmt == "tsv":
            kwargs["quoting"] = csv.QUOTE_NONE  # GLUE's TSVs contain bare quotes
        names = list(columns) if not header else _header_of(path, delimiter, fmt)
        if not header:
            kwargs["column_names"] = names
        kwargs["features"] = hf_datasets.Features({n: hf_datasets.Value("string") for n in names})
        kwargs["keep_default_na"] = False  # "", "NA", "null" … are text, not missing values
        builder = "csv"
    else:
        builder = fmt
    hf_datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="minidistill-data-") as scratch:
        try:
            ds = hf_datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True,
                                          cache_dir=scratch, **kwargs)
        except Exception as e:  # pyarrow / pandas parse errors
            raise DataError(f"{path}: could not parse as {fmt}: {str(e).splitlines()[0][:300]}") from None
        return ds.to_dict()


def _header_of(path: Path, delimiter: str, fmt: str) -> list[str]:
    """The column names on the first line of a CSV / TSV file."""
    with open(path, encoding="utf-8", newline="") as fh:
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
        row = next(csv.reader(fh, delimiter=delimiter, quoting=quoting), [])
    names = [c.strip() for c in row]
    if not names or any(not c for c in names):
        raise DataError(f"{path}, line 1: the header names no columns or has an empty column name: {row}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}, line 1: duplicate column names in the header: {names}")
    return names


def _labels_from(values, spec: TaskSpec, path: Path, first_line: int) -> np.ndarray:
    if spec.is_regression:
        try:
            return np.asarray([float(v) for v in values], dtype=np.float32)
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(values) if not _is_float(v))
            raise DataError(f"{path}, line {bad + first_line}: label {values[bad]!r} is not a number") from None
    names = [str(x) for x in spec.labels]
    lookup = {name: i for i, name in enumerate(names)}
    if spec.label_map:
        lookup.update(spec.label_map)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if _missing(v):
            raise DataError(f"{path}, line {i + first_line}: missing label in column {spec.label_column!r}")
        key = str(int(v)) if isinstance(v, (int, np.integer)) else _label_text(v)
        if key not in lookup:
            raise DataError(f"{path}, line {i + first_line}: unknown label {v!r} in column "
                            f"{spec.label_column!r}; expected one of {names}")
        out[i] = lookup[key]
    return out


def _missing(v) -> bool:
    """An empty cell: None, blank text, or a NaN that a typed column holds."""
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v)


def _label_text(v) -> str:
    """A label as text: ``1`` (not ``1.0``) for a whole number a typed column holds."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


SPLIT_NAMES = ("train", "dev", "test", "validation", "valid", "eval")


def task_name_of(path) -> str:
    """A task's name from its file: the file's stem, or its folder's name when the stem only
    names a split (``sst/train.tsv`` → ``sst``)."""
    path = Path(path)
    stem = path.stem.split(".")[0]
    if stem.lower() in SPLIT_NAMES and path.resolve().parent.name:
        return path.resolve().parent.name
    return stem


def _natural(label: str):
    """Sort key: numbers by value (``2`` before ``10``), then text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def load_file(path, text_column: str = "text", text_pair_column: str | None = None,
              label_column: str | None = "label", labels=None, format: str | None = None,
              task: TaskSpec | None = None) -> TextDataset:
    """Load a local CSV / TSV / JSON-lines / parquet file.

    Args:
        path: the file.
        text_column: the text column.
        text_pair_column: the second text column, for sentence pairs.
        label_column: the label column, or None for unlabelled text.
        labels: label names in id order (values in the file may be the names or the ids);
            None with a label column means: the sorted distinct values.
        format: ``csv``, ``tsv``, ``json`` or ``parquet`` (default: from the suffix).
        task: a :class:`TaskSpec` that gives all of the above.

    Raises:
        DataError: naming the file (and line or column) that is wrong.
    """
    path = Path(path)
    _check_text_file(path)
    fmt = _format_of(path, format)
    infer_labels = task is None and label_column is not None and labels is None
    if task is None:
        task = TaskSpec(task_name_of(path), text_column, text_pair_column, label_column,
                        None if labels is None else tuple(str(x) for x in labels), ("accuracy",))
    header = task.header
    table = _read_table(path, fmt, header, task.columns)
    available = list(table)
    if not available or not any(len(v) for v in table.values()):
        raise DataError(f"data file {path} has no rows")
    needed = [c for c in (task.text_column, task.text_pair_column, task.label_column) if c]
    for col in needed:
        if col not in table:
            raise DataError(f"{path}: missing column {col!r}; the file has columns {available}")
    if infer_labels:  # no label set given: the sorted distinct values found in the file
        values = table[task.label_column]
        first = 2 if (header and fmt in ("csv", "tsv")) else 1
        for i, v in enumerate(values):
            if _missing(v):
                raise DataError(f"{path}, line {i + first}: missing label in column {task.label_column!r}")
        found = tuple(sorted({_label_text(v) for v in values}, key=_natural))
        task = TaskSpec(task.name, task.text_column, task.text_pair_column, task.label_column, found, task.metrics)
    first_line = 2 if (header and fmt in ("csv", "tsv")) else 1
    texts = table[task.text_column]
    for i, t in enumerate(texts):
        if t is None:
            raise DataError(f"{path}, line {i + first_line}: empty text in column {task.text_column!r}")
    texts = [str(t) for t in texts]
    pairs = None if task.text_pair_column is None else [str(t) if t is not None else "" for t in table[task.text_pair_column]]
    labels_arr = None if task.label_column is None else _labels_from(table[task.label_column], task, path, first_line)
    return TextDataset(texts, pairs, labels_arr, task)


def load_glue(task: str, data_dir, split: str = "train") -> TextDataset:
    """Load a GLUE task from a local folder in GLUE's own layout.

    ``data_dir`` may be the folder of all tasks (``glue_data/``, holding ``SST-2/`` …) or
    the task's own folder. Splits: ``train``, ``dev`` (MNLI: matched), ``dev_mismatched``.
    """
    key = task.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    spec = GLUE_TASKS[key]
    if split not in spec.files:
        raise DataError(f"GLUE task {task!r} has no split {split!r}; known: {', '.join(spec.files)}")
    base = Path(data_dir)
    folder = base / GLUE_FOLDERS[key] if (base / GLUE_FOLDERS[key]).is_dir() else base
    return load_file(folder / spec.files[split], format="tsv", task=spec)


def rotten_tomatoes_split(text: str) -> str:
    """The canonical split of a snippet: sha1 of its UTF-8 text mod 10 (0 test, 1 dev, else train)."""
    h = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def load_rotten_tomatoes(split: str = "train") -> TextDataset:
    """Rotten Tomatoes critic snippets, fresh (1) / rotten (0), plot rows and duplicates dropped."""
    if split not in ("train", "dev", "test"):
        raise DataError(f"rotten_tomatoes has splits train, dev and test, not {split!r}")
    texts, labels = _rotten_tomatoes_splits()[split]
    return TextDataset(list(texts), None, np.asarray(labels, dtype=np.int64), ROTTEN_TOMATOES)


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_splits() -> dict:
    """``{split: (texts, labels)}``, read once per process (the corpus is decompressed, parsed and
    split in about a second; every split asks for all of it)."""
    from .. import assets

    raw = (assets.path("rotten-tomatoes") / "rotten_tomatoes_corpus_full.csv.bz2").read_bytes()
    reader = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    seen, out = set(), {name: ([], []) for name in ("train", "dev", "test")}
    for row in reader:
        category, text = row["category"], row["text"].strip()
        if category not in ("fresh", "rotten") or not text or text in seen:
            continue
        seen.add(text)
        texts, labels = out[rotten_tomatoes_split(text)]
        texts.append(text)
        labels.append(1 if category == "fresh" else 0)
    return {name: (tuple(t), tuple(lab)) for name, (t, lab) in out.items()}


def load_dataset(name: str, split: str = "train", data_dir=None):
    """A task by name: ``rotten_tomatoes`` (packaged), ``conll2003`` (named entities, packaged:
    a :class:`~minidistill.data.tagging.TokenDataset`) or a GLUE task (needs ``data_dir``)."""
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes(split)
    if name == "conll2003":
        from .tagging import load_conll2003

        return load_conll2003(split)
    if name.lower().replace("-", "") in GLUE_TASKS:
        if data_dir is None:
            raise DataError(f"GLUE task {name!r} needs data_dir: the folder you downloaded GLUE into")
        return load_glue(name, data_dir, split)
    raise DataError(f"unknown dataset {name!r}: use 'rotten_tomatoes', 'conll2003', a GLUE task, or load_file(path)")
