"""Raw-text corpora for task-agnostic distillation: files → documents → a memory-mapped token
cache → fixed-length packed sequences, read in bounded memory.

* :func:`iter_documents` streams documents from plain-text files (documents separated by blank
  lines, a document's lines joined by spaces), JSON-lines files (one document per line, its
  ``text`` field) or a folder of them (sorted, recursively), one line at a time.
* :class:`CorpusCache` tokenises the documents once into ``tokens.i32`` (every token id, int32)
  and ``docs.i64`` (each document's end offset), appended chunk by chunk. ``meta.json`` records
  the tokenizer's and the files' fingerprints and how many documents are written; it is replaced
  atomically only after the chunk's rows are flushed, so a build killed at any point resumes
  where the last chunk ended (files cut back to what ``meta.json`` vouches for) and gives the
  same files as a build done in one go. A cache of another tokenizer or other files is refused.
* :class:`PackedCorpus` cuts the cached tokens into sequences of ``seq_len`` tokens
  (``[CLS]`` + ``seq_len − 2`` tokens + ``[SEP]``) over memory maps. By default no sequence
  crosses a document boundary (a document's last piece is shorter and padded); with
  ``cross_documents=True`` documents are concatenated with ``[SEP]`` between them and cut into
  full sequences (the boundary marked, BERT's pre-training layout). With a
  :class:`~minidistill.data.masking.MaskingCollator`, every batch is masked from
  ``(seed, step)``, so a resumed run sees the same masks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import assets
from ..fileio import CheckpointError, write_json
from .datasets import DataError, batch_order, iter_json_lines

TEXT_SUFFIXES = (".txt", ".text")
JSON_SUFFIXES = (".jsonl", ".json")
FORMAT = "minidistill-corpus-cache-1"


CORPORA = {"debian-docs": {"train": "train.jsonl", "valid": "valid.jsonl"}}


def resolve_corpus(spec) -> list:
    """Corpus files from a spec: a named corpus asset (``"debian-docs"`` is its training split,
    ``"debian-docs:valid"`` its held-out pages; fetched on first use), or files / folders."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out = []
    for s in specs:
        name, _, split = str(s).partition(":")
        if name in CORPORA and not Path(str(s)).exists():
            splits = CORPORA[name]
            split = split or "train"
            if split not in splits:
                raise DataError(f"corpus {name!r} has splits {', '.join(splits)}, not {split!r}")
            out.append(assets.path(name) / splits[split])
        else:
            out.append(Path(s))
    return out


def held_out_split(specs) -> list | None:
    """``["NAME:valid"]`` when ``specs`` name one named corpus (its held-out pages), else None."""
    names = {str(s).partition(":")[0] for s in ([specs] if isinstance(specs, (str, Path)) else specs)}
    if len(names) == 1 and (name := next(iter(names))) in CORPORA:
        return [f"{name}:valid"]
    return None


def corpus_files(paths) -> list:
    """The files of ``paths`` (files, or folders read recursively), sorted within each folder;
    only ``.txt`` / ``.text`` / ``.jsonl`` / ``.json`` files are taken from folders."""
    out = []
    for p in resolve_corpus(paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES + JSON_SUFFIXES)
            if not found:
                raise DataError(f"{p} holds no .txt / .jsonl files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"corpus file {p} does not exist")
    return out


def iter_documents(paths, text_field: str = "text"):
    """Yield the documents of ``paths`` in order, one string each, reading line by line."""
    for path in corpus_files(paths):
        if path.suffix.lower() in JSON_SUFFIXES:
            for _, row in iter_json_lines(path, text_field):
                if str(row[text_field]).strip():
                    yield str(row[text_field])
            continue
        lines = []
        with open(path, encoding="utf-8", errors="strict") as f:
            try:
                for line in f:
                    if line.strip():
                        lines.append(line.strip())
                    elif lines:
                        yield " ".join(lines)
                        lines = []
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if lines:
            yield " ".join(lines)


def files_fingerprint(paths) -> list:
    """``[(name, bytes, sha1)]`` of every corpus file (read in 1 MB chunks)."""
    out = []
    for path in corpus_files(paths):
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out.append([path.name, path.stat().st_size, h.hexdigest()])
    return out


def tokenizer_fingerprint(tokenizer) -> str:
    """sha1 of the tokenizer's vocabulary and its lower-casing (what changes the ids)."""
    h = hashlib.sha1()
    for token, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{i}\t{token}\n".encode())
    h.update(repr(tokenizer.encode_words([["Aa"]])[0][0]).encode())  # lower-casing changes this id
    return h.hexdigest()


class CorpusCache:
    """A corpus tokenised once, on disk (see the module docstring).

    Args:
        path: the cache folder.
    """

    def __init__(self, path):
        self.path = Path(path)
        meta = self.path / "meta.json"
        self.meta = json.loads(meta.read_text()) if meta.is_file() else None

    @classmethod
    def build(cls, path, tokenizer, paths, chunk_docs: int = 2000, text_field: str = "text",
              _after_chunk=None) -> "CorpusCache":
        """Write (or finish writing) the token cache of the corpus ``paths``.

        Raises:
            CheckpointError: the folder holds a cache of another tokenizer or other files.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "tokenizer": tokenizer_fingerprint(tokenizer), "files": files_fingerprint(paths),
                "docs": 0, "tokens": 0, "complete": False}
        old = cls(path).meta
        if old is not None:
            for key, what in (("format", "another format"), ("tokenizer", "another tokenizer"),
                              ("files", "other files (names, sizes or contents differ)")):
                if old.get(key) != meta[key]:
                    raise CheckpointError(f"{path} holds a corpus cache of {what}; delete it or choose another folder")
            if old["complete"]:
                return cls(path)
            meta.update(docs=old["docs"], tokens=old["tokens"])
        tok_file, doc_file = path / "tokens.i32", path / "docs.i64"
        for f, rows, width in ((tok_file, meta["tokens"], 4), (doc_file, meta["docs"], 8)):
            with open(f, "ab") as fh:  # what a killed build wrote after its last meta.json is cut off
                fh.truncate(rows * width)
        if old is None:
            write_json(path / "meta.json", meta)
        done, pending = 0, []

        def flush():
            if not pending:
                return
            encoded = tokenizer.encode_words([d.split() for d in pending])
            ids = [np.asarray(e[0], dtype=np.int32) for e in encoded]
            ends = meta["tokens"] + np.cumsum([len(a) for a in ids], dtype=np.int64)
            with open(tok_file, "ab") as fh:
                for a in ids:
                    fh.write(a.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            with open(doc_file, "ab") as fh:
                fh.write(ends.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            meta["docs"] += len(pending)
            meta["tokens"] = int(ends[-1]) if len(ends) else meta["tokens"]
            write_json(path / "meta.json", meta)  # rows on disk before the counter says so
            pending.clear()
            if _after_chunk is not None:
                _after_chunk(meta["docs"])

        for doc in iter_documents(paths, text_field):
            done += 1
            if done <= meta["docs"]:
                continue  # written before the interruption
            pending.append(doc)
            if len(pending) >= chunk_docs:
                flush()
        flush()
        meta["complete"] = True
        write_json(path / "meta.json", meta)
        return cls(path)

    def check(self, tokenizer, paths) -> None:
        """Raise unless this cache is complete and was built with ``tokenizer`` from ``paths``."""
        if self.meta is None:
            raise CheckpointError(f"{self.path} holds no corpus cache")
        if self.meta["tokenizer"] != tokenizer_fingerprint(tokenizer):
            raise CheckpointError(f"{self.path} was built with another tokenizer")
        if self.meta["files"] != files_fingerprint(paths):
            raise CheckpointError(f"{self.path} was built from other files (names, sizes or contents differ)")
        if not self.meta["complete"]:
            raise CheckpointError(f"{self.path} is incomplete ({self.meta['docs']} documents); build it again to finish")

    @property
    def tokens(self) -> np.ndarray:
        """Every token id, int32, memory-mapped (read-only)."""
        return np.memmap(self.path / "tokens.i32", np.int32, "r", shape=(self.meta["tokens"],)) \
            if self.meta["tokens"] else np.zeros(0, np.int32)

    @property
    def doc_ends(self) -> np.ndarray:
        """Each document's end offset into :attr:`tokens`, int64 (read-only map)."""
        return np.memmap(self.path / "docs.i64", np.int64, "r", shape=(self.meta["docs"],)) \
            if self.meta["docs"] else np.zeros(0, np.int64)


class PackedCorpus:
    """Fixed-length sequences over a :class:`CorpusCache` (see the module docstring).

    Args:
        cache: the token cache.
        tokenizer: gives ``[CLS]``, ``[SEP]``, ``[PAD]``.
        seq_len: tokens per sequence, ``[CLS]`` and ``[SEP]`` included.
        cross_documents: concatenate documents with ``[SEP]`` between them (full sequences)
            instead of keeping each sequence inside one document.
        masking: a :class:`~minidistill.data.masking.MaskingCollator` applied to every batch.
    """

    task = None
    text_pairs = None

    def __init__(self, cache: CorpusCache, tokenizer, seq_len: int = 128, cross_documents: bool = False,
                 masking=None):
        if seq_len < 3:
            raise ValueError(f"seq_len must leave room for [CLS] and [SEP], got {seq_len}")
        self.cache, self.seq_len, self.cross_documents, self.masking = cache, seq_len, cross_documents, masking
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.spans = self._spans()  # (N, 2) [start, end) into the token stream (cross: into the SEP-joined stream)

    def _spans(self) -> np.ndarray:
        body = self.seq_len - 2
        ends = np.asarray(self.cache.doc_ends, dtype=np.int64)
        if self.cross_documents:
            total = int(ends[-1]) + len(ends) - 1 if len(ends) else 0  # one [SEP] between documents
            starts = np.arange(0, total, body, dtype=np.int64)
            return np.stack([starts, np.minimum(starts + body, total)], axis=1)
        begins = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
        pieces = [np.arange(b, e, body, dtype=np.int64) for b, e in zip(begins, ends) if e > b]
        if not pieces:
            return np.zeros((0, 2), np.int64)
        starts = np.concatenate(pieces)
        stops = np.minimum(starts + body, np.repeat(ends[ends > begins], [len(p) for p in pieces]))
        return np.stack([starts, stops], axis=1)

    def __len__(self) -> int:
        return len(self.spans)

    @property
    def labels(self):
        """``"masked-lm"`` when batches are masked (their labels are the masked tokens), else None."""
        return "masked-lm" if self.masking is not None else None

    def sequence(self, i: int) -> np.ndarray:
        """The ids of sequence ``i`` with ``[CLS]`` and ``[SEP]``."""
        a, b = (int(x) for x in self.spans[i])
        tokens = self.cache.tokens
        if not self.cross_documents:
            body = np.asarray(tokens[a:b])
        else:  # the stream is the documents joined by one [SEP]; the k-th [SEP] sits at end_k + k
            ends = np.asarray(self.cache.doc_ends)
            seps = ends[:-1] + np.arange(len(ends) - 1)  # (D − 1,) stream positions of the separators
            pos = np.arange(a, b)  # (n,) stream positions of this sequence
            k = np.searchsorted(seps, pos)  # separators before each position (or at it)
            is_sep = (k < len(seps)) & (seps[np.minimum(k, max(len(seps) - 1, 0))] == pos) if len(seps) else \
                np.zeros(len(pos), bool)
            src = np.where(is_sep, 0, pos - k)  # the token each non-separator position holds
            body = np.where(is_sep, self.sep_id, np.asarray(tokens[src]) if len(tokens) else 0)
        return np.concatenate([[self.cls_id], body, [self.sep_id]]).astype(np.int64)

    def num_batches(self, batch_size: int, tokenizer=None, max_length: int | None = None) -> int:
        """Batches per epoch."""
        return (len(self) + batch_size - 1) // batch_size

    def batches(self, tokenizer, batch_size: int = 32, max_length: int = 128, shuffle: bool = False,
                seed: int = 0, epoch: int = 0, bucket: bool = True, skip: int = 0):
        """Padded batches of sequences (``max_length`` must allow ``seq_len``), masked when a
        collator is set, from ``(masking seed, epoch · batches per epoch + batch index)``."""
        if max_length < self.seq_len:
            raise ValueError(f"the corpus is packed into {self.seq_len} tokens; max_length {max_length} is shorter")
        lengths = (self.spans[:, 1] - self.spans[:, 0]) + 2
        order = batch_order(len(self), batch_size, lengths, shuffle, seed, epoch, bucket)
        per_epoch = len(order)
        for k, idx in enumerate(order[skip:], start=skip):
            rows = [self.sequence(int(i)) for i in idx]
            width = max(len(r) for r in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = row
                mask[r, :len(row)] = 1
            batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
                     "example_ids": np.asarray(idx, dtype=np.int64)}
            if self.masking is not None:
                batch = self.masking(batch, epoch * per_epoch + k)
            yield batch
