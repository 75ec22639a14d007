"""Token-labelled text (named-entity recognition and other tagging tasks).

* :func:`read_conll` reads CoNLL-style column files: one token per line, columns split on
  whitespace, a blank line between sentences, ``-DOCSTART-`` lines skipped; the word column
  and the tag column are chosen (default: first and last).
* :func:`read_token_jsonl` reads JSON lines with a ``tokens`` and a ``tags`` list per line.
* :class:`TokenDataset` holds the sentences and their tag ids, and cuts them into model
  windows. Words become WordPiece tokens with the fast tokenizer's word ids; **a word's label
  sits on its first sub-word only** (-100 on the other sub-words, on [CLS] / [SEP] and on
  padding, as transformers' token-classification recipe does). A sentence longer than the
  window is split into windows of ``max_length`` tokens that overlap by ``stride`` tokens, and
  every word is *owned* by exactly one window — the one where its first sub-word has the most
  context on both sides (the "maximum context" rule of BERT's SQuAD code) — so every word is
  labelled, trained on and scored exactly once.

Tag schemes: ``BIO`` (IOB2: ``B-X`` opens an entity, ``I-X`` continues it, ``O`` is outside)
and ``BIOES`` (``E-X`` closes, ``S-X`` is a one-token entity). Reading validates every tag
against the scheme and names the file, the sentence and the token of a bad one. With
``strict=True`` a continuation tag must also follow a tag of the same entity (``I-PER`` after
``O`` is refused); the default accepts it, as conlleval does (it then opens an entity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DataError, TaskSpec, WindowedDataset, _check_text_file, iter_json_lines, task_name_of

SCHEMES = {"BIO": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S"), "IOBES": ("B", "I", "E", "S")}
ENTITY_METRICS = ("f1", "precision", "recall", "token_accuracy")


def split_tag(tag: str) -> tuple:
    """``"B-PER"`` → ``("B", "PER")``; ``"O"`` → ``("O", "")``. A tag without a prefix is
    returned with prefix ``""`` (the validator refuses it)."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_":
        return tag[0], tag[2:]
    return "", tag


def validate_tags(tags, scheme: str = "BIO", where: str = "", strict: bool = False) -> None:
    """Check one sentence's tags against ``scheme``; ``where`` prefixes the error.

    Raises:
        DataError: naming the token (1-based) and what is wrong with its tag.
    """
    key = scheme.upper()
    if key not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; known: BIO (IOB2), BIOES (IOBES)")
    allowed = SCHEMES[key]
    prev = ("O", "")
    for k, tag in enumerate(tags):
        prefix, kind = split_tag(str(tag))
        if prefix != "O" and (prefix not in allowed or not kind):
            raise DataError(f"{where}token {k + 1}: tag {tag!r} is not a {key} tag "
                            f"(expected O or {'/'.join(p + '-TYPE' for p in allowed)})")
        if strict and prefix in ("I", "E"):
            if prev[0] not in ("B", "I") or prev[1] != kind:
                raise DataError(f"{where}token {k + 1}: tag {tag!r} continues an entity that was not opened "
                                f"(previous tag {'-'.join(p for p in prev if p) or 'O'})")
        if strict and key in ("BIOES", "IOBES") and prev[0] in ("B", "I") and prefix not in ("I", "E"):
            raise DataError(f"{where}token {k + 1}: the entity opened before tag {tag!r} is never closed with E-")
        prev = (prefix, kind)
    if strict and key in ("BIOES", "IOBES") and prev[0] in ("B", "I"):
        raise DataError(f"{where}the last entity is never closed with E-")


def entities(tags, scheme: str | None = None) -> list:
    """The entities ``(type, first, last)`` (inclusive word indices) in a tag sequence, with
    conlleval's chunk rules (so ``I-X`` after ``O`` or after another type opens an entity, and a
    type change closes one). ``scheme`` is accepted for symmetry; the rules cover BIO and BIOES."""
    found = []
    start, prev_prefix, prev_kind = None, "O", ""
    for k, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = split_tag(str(tag))
        if prefix == "":
            prefix, kind = "I", kind  # a bare type continues (conlleval's IOB1 reading)
        if start is not None and _chunk_ends(prev_prefix, prefix, prev_kind, kind):
            found.append((prev_kind, start, k - 1))
            start = None
        if _chunk_starts(prev_prefix, prefix, prev_kind, kind):
            start = k
        prev_prefix, prev_kind = prefix, kind
    return found


def _chunk_ends(prev, cur, prev_kind, kind) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and prev_kind != kind


def _chunk_starts(prev, cur, prev_kind, kind) -> bool:
    if cur in ("B", "S"):
        return True
    if cur in ("E", "I") and prev in ("E", "S", "O"):
        return True
    return cur != "O" and prev_kind != kind


# ------------------------------------------------------------------- readers
def read_conll(path, tag_column: int = -1, word_column: int = 0, scheme: str | None = "BIO",
               strict: bool = False) -> tuple:
    """Read a CoNLL-style column file: ``(sentences, tags)``, lists of word / tag lists.

    Args:
        path: the file (UTF-8).
        tag_column: which whitespace-separated column holds the tag (default: the last).
        word_column: which column holds the word (default: the first).
        scheme: validate tags against ``BIO`` / ``BIOES``; None skips validation.
        strict: also refuse continuation tags that open an entity (see the module docstring).

    Raises:
        DataError: naming the file, the line and what is wrong.
    """
    path = Path(path)
    _check_text_file(path)
    sentences, tags, words, labels, starts = [], [], [], [], []
    start_line = None
    with open(path, encoding="utf-8") as f:
        lines = list(f)
    for n, line in enumerate(lines + ["\n"], start=1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
                tags.append(labels)
                starts.append(start_line)
            words, labels, start_line = [], [], None
            continue
        try:
            word, tag = parts[word_column], parts[tag_column]
        except IndexError:
            raise DataError(f"{path}, line {n}: {len(parts)} column(s), but the word / tag columns are "
                            f"{word_column} / {tag_column}") from None
        if start_line is None:
            start_line = n
        words.append(word)
        labels.append(tag)
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    if scheme is not None:
        for i, (t, line) in enumerate(zip(tags, starts)):
            validate_tags(t, scheme, f"{path}, sentence {i + 1} (line {line}), ", strict)
    return sentences, tags


def read_token_jsonl(path, tokens_key: str = "tokens", tags_key: str | None = "tags",
                     scheme: str | None = "BIO", strict: bool = False, labels=None) -> tuple:
    """Read JSON lines with a word list and a tag list per line: ``(sentences, tags)``.

    Tags may be names or ids (ids need ``labels``, the names in id order). ``tags_key=None``
    reads unlabelled sentences (``tags`` is None).
    """
    path = Path(path)
    _check_text_file(path)
    sentences, tags = [], [] if tags_key is not None else None
    for n, row in iter_json_lines(path, tokens_key):
        words = [str(w) for w in row[tokens_key]]
        if not words:
            continue
        sentences.append(words)
        if tags_key is None:
            continue
        if tags_key not in row:
            raise DataError(f"{path}, line {n}: no {tags_key!r} field (fields: {sorted(row)})")
        t = row[tags_key]
        if len(t) != len(words):
            raise DataError(f"{path}, line {n}: {len(words)} tokens but {len(t)} tags")
        if t and all(isinstance(x, int) for x in t):
            if labels is None:
                raise DataError(f"{path}, line {n}: tags are ids; give the tag names (labels=…) to read them")
            if any(not 0 <= x < len(labels) for x in t):
                raise DataError(f"{path}, line {n}: a tag id is outside 0..{len(labels) - 1}")
            t = [labels[x] for x in t]
        tags.append([str(x) for x in t])
        if scheme is not None:
            validate_tags(tags[-1], scheme, f"{path}, sentence {len(sentences)} (line {n}), ", strict)
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return sentences, tags


def tag_names(tags) -> tuple:
    """The tag set of a corpus in a stable order: ``O`` first, then by entity type, B/I/E/S."""
    order = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4}
    found = {t for sent in tags for t in sent}
    return tuple(sorted(found, key=lambda t: (t != "O", split_tag(t)[1], order.get(split_tag(t)[0], 9))))


def load_tagged_file(path, labels=None, name: str | None = None, scheme: str = "BIO", format: str | None = None,
                     tag_column: int = -1, word_column: int = 0, strict: bool = False) -> "TokenDataset":
    """A :class:`TokenDataset` from a CoNLL file (``.conll``, ``.txt``, ``.iob``, …) or JSON lines
    (``.jsonl`` / ``.json``). ``labels``: the tag names in id order (default: those found, ``O``
    first); a tag outside ``labels`` is an error naming the file and sentence."""
    path = Path(path)
    fmt = format or ("jsonl" if path.suffix.lower() in (".jsonl", ".json") else "conll")
    if fmt == "jsonl":
        sentences, tags = read_token_jsonl(path, scheme=scheme, strict=strict, labels=labels)
    elif fmt == "conll":
        sentences, tags = read_conll(path, tag_column, word_column, scheme, strict)
    else:
        raise DataError(f"unknown token-file format {fmt!r}: use 'conll' or 'jsonl'")
    names = tuple(labels) if labels is not None else tag_names(tags)
    task = TaskSpec(name or task_name_of(path), "tokens", None, "tags", names, ENTITY_METRICS,
                    kind="token", scheme=scheme.upper())
    return TokenDataset.from_tags(sentences, tags, task, where=str(path))


CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL2003 = TaskSpec("conll2003", "tokens", None, "tags", CONLL2003_TAGS, ENTITY_METRICS, kind="token", scheme="BIO")
CONLL2003_FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}


def load_conll2003(split: str = "train") -> "TokenDataset":
    """CoNLL-2003 English NER (the packaged asset ``conll2003``): ``train`` (14,041 sentences),
    ``dev`` (3,250) or ``test`` (3,453), with the 9 BIO tags of PER / ORG / LOC / MISC."""
    from .. import assets

    if split not in CONLL2003_FILES:
        raise DataError(f"conll2003 has splits train, dev and test, not {split!r}")
    sentences, tags = read_conll(assets.path("conll2003") / CONLL2003_FILES[split], tag_column=3)
    return TokenDataset.from_tags(sentences, tags, CONLL2003, where=f"conll2003/{CONLL2003_FILES[split]}")


# ------------------------------------------------------------------- dataset
@dataclass
class TokenDataset(WindowedDataset):
    """Sentences as word lists, with one tag id per word (or no tags: transfer data).

    Attributes:
        words: the sentences, each a list of words.
        tags: per sentence an int64 array of tag ids (one per word), or None.
        task: the :class:`TaskSpec` (``kind="token"``; ``labels`` are the tag names).
        stride: tokens shared by neighbouring windows of a sentence longer than the window.
    """

    words: list
    tags: list | None = None
    task: TaskSpec | None = None
    stride: int = 32

    def __post_init__(self):
        if self.tags is not None and len(self.tags) != len(self.words):
            raise DataError(f"{len(self.words)} sentences but {len(self.tags)} tag lists")
        if self.tags is not None:
            for i, (w, t) in enumerate(zip(self.words, self.tags)):
                if len(w) != len(t):
                    raise DataError(f"sentence {i + 1}: {len(w)} words but {len(t)} tags")
        self._encoded = None

    @classmethod
    def from_tags(cls, sentences, tags, task: TaskSpec, where: str = "data", stride: int = 32) -> "TokenDataset":
        """Tag names → ids with ``task.labels``; an unknown tag names the sentence and token."""
        if tags is None:
            return cls([list(s) for s in sentences], None, task, stride)
        index = {name: i for i, name in enumerate(task.labels)}
        ids = []
        for i, sent in enumerate(tags):
            row = np.empty(len(sent), dtype=np.int64)
            for k, t in enumerate(sent):
                if t not in index:
                    raise DataError(f"{where}, sentence {i + 1}, token {k + 1}: tag {t!r} is not among the "
                                    f"task's tags {list(task.labels)}")
                row[k] = index[t]
            ids.append(row)
        return cls([list(s) for s in sentences], ids, task, stride)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list:
        """Each sentence's words joined by spaces (what fingerprints and the BiLSTM read)."""
        return [" ".join(w) for w in self.words]

    text_pairs = None

    @property
    def labels(self):
        """The tag arrays (None when unlabelled): the attribute the training code checks."""
        return self.tags

    def tag_strings(self, i: int) -> list:
        """Sentence ``i``'s tags as names."""
        return [self.task.labels[t] for t in self.tags[i]]

    def select(self, indices) -> "TokenDataset":
        """A dataset of the sentences at ``indices``."""
        idx = [int(i) for i in indices]
        return TokenDataset([self.words[i] for i in idx], None if self.tags is None else [self.tags[i] for i in idx],
                            self.task, self.stride)

    def without_labels(self) -> "TokenDataset":
        """The same sentences, untagged (transfer data for distillation)."""
        return TokenDataset(list(self.words), None, self.task, self.stride)

    # ---------------------------------------------------------------- windows
    def encode(self, tokenizer, max_length: int) -> list:
        """The model windows of every sentence, in order (cached per tokenizer and length).

        Each window is ``(ids, type_ids, labels, word_index, first)``: ids with [CLS] / [SEP];
        ``labels`` the tag id on the first sub-word of each word the window owns, -100
        elsewhere; ``word_index`` (sentence, word) of those positions, (-1, -1) elsewhere;
        ``first`` 1 on the first sub-word of every word in the window (owned or not).
        """
        key = (id(tokenizer), max_length, self.stride)
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, self._windows(tokenizer, max_length))
        return self._encoded[1]

    def _windows(self, tokenizer, max_length: int) -> list:
        body = max_length - 2
        if body < 1:
            raise DataError(f"max_length {max_length} leaves no room for words beside [CLS] and [SEP]")
        stride = min(max(0, self.stride), body - 1)
        out = []
        for s, (ids, word_ids) in enumerate(tokenizer.encode_words(self.words)):
            n = len(ids)
            starts = [0]
            while starts[-1] + body < n:  # the next window begins `stride` tokens before this one ends
                starts.append(starts[-1] + body - stride)
            spans = [(a, min(n, a + body)) for a in starts]
            firsts = [k for k in range(n) if k == 0 or word_ids[k] != word_ids[k - 1]]
            owner = {}
            for k in firsts:  # the window where k has the most context on both sides
                best, score = None, None
                for w, (a, b) in enumerate(spans):
                    if a <= k < b:
                        c = min(k - a, b - 1 - k)
                        if score is None or c > score:
                            best, score = w, c
                owner[k] = best
            tags = self.tags[s] if self.tags is not None else None
            for w, (a, b) in enumerate(spans):
                width = b - a + 2
                labels = np.full(width, -100, dtype=np.int64)
                word_index = np.full((width, 2), -1, dtype=np.int64)
                first = np.zeros(width, dtype=np.int64)
                for k in firsts:
                    if a <= k < b:
                        first[k - a + 1] = 1
                        if owner[k] == w:
                            word_index[k - a + 1] = (s, word_ids[k])
                            if tags is not None:
                                labels[k - a + 1] = tags[word_ids[k]]
                seq = [tokenizer.cls_token_id] + ids[a:b] + [tokenizer.sep_token_id]
                out.append((seq, [0] * width, labels, word_index, first))
        return out

    def collate(self, encoded, indices, pad_id: int) -> dict:
        """Pad the windows at ``indices``: model inputs, ``example_ids`` (window numbers),
        ``labels`` (B, T) with -100 on padding, ``token_mask`` (B, T) on first sub-words."""
        rows = [encoded[i] for i in indices]
        batch = self.pad_windows(rows, indices, pad_id)
        shape = batch["input_ids"].shape
        batch["token_mask"] = np.zeros(shape, dtype=np.int64)
        labels = np.full(shape, -100, dtype=np.int64)
        for r, (ids, _, lab, _, first) in enumerate(rows):
            batch["token_mask"][r, :len(ids)] = first
            labels[r, :len(ids)] = lab
        if self.tags is not None:
            batch["labels"] = labels
        return batch

    # ------------------------------------------------------------ predictions
    def word_predictions(self, logits, tokenizer, max_length: int) -> list:
        """Per sentence, the predicted tag id of every word, read at each word's first sub-word
        in the window that owns it; ``logits`` (windows, T, C) in window order."""
        encoded = self.encode(tokenizer, max_length)
        if len(logits) != len(encoded):
            raise ValueError(f"{len(logits)} rows of logits for {len(encoded)} windows")
        pred = [np.full(len(w), -1, dtype=np.int64) for w in self.words]
        for row, (_, _, _, word_index, _) in zip(logits, encoded):
            at = np.nonzero(word_index[:, 0] >= 0)[0]
            if len(at):
                best = np.asarray(row)[at].argmax(-1)
                for p, (s, w) in zip(best, word_index[at]):
                    pred[s][w] = int(p)
        return pred

