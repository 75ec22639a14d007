"""A WordPiece tokenizer over the ``tokenizers`` package, returning NumPy arrays.

``Tokenizer.from_pretrained(folder)`` reads ``tokenizer.json`` when present, else builds
BERT's pipeline (BertNormalizer, BertPreTokenizer, WordPiece, [CLS] … [SEP] template) from
``vocab.txt`` and the lower-casing flag in ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class Tokenizer:
    """Batch encoding with padding, truncation and attention masks.

    Args:
        backend: a ``tokenizers.Tokenizer``. Fixed padding and truncation in it are switched
            off; :meth:`encode` applies them per call.
    """

    def __init__(self, backend, model_max_length: int = 512):
        self._tok = backend
        self._tok.no_padding()
        self._tok.no_truncation()
        self.model_max_length = model_max_length
        vocab = self._tok.get_vocab()
        self.pad_token, self.cls_token, self.sep_token = "[PAD]", "[CLS]", "[SEP]"
        self.unk_token, self.mask_token = "[UNK]", "[MASK]"
        for tok in (self.pad_token, self.cls_token, self.sep_token, self.unk_token, self.mask_token):
            if tok not in vocab:
                raise ValueError(f"the vocabulary has no {tok} token; is this a BERT WordPiece vocabulary?")
        self.pad_token_id = vocab[self.pad_token]
        self.cls_token_id = vocab[self.cls_token]
        self.sep_token_id = vocab[self.sep_token]
        self.unk_token_id = vocab[self.unk_token]
        self.mask_token_id = vocab[self.mask_token]

    @classmethod
    def from_pretrained(cls, path) -> "Tokenizer":
        """Load from a folder with ``tokenizer.json`` or ``vocab.txt``."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer folder {path} does not exist")
        cfg = {}
        if (path / "tokenizer_config.json").is_file():
            cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        max_len = int(cfg.get("model_max_length", 512) or 512)
        max_len = max_len if max_len < 10**6 else 512
        if (path / "tokenizer.json").is_file():
            return cls(HFTokenizer.from_file(str(path / "tokenizer.json")), max_len)
        if (path / "vocab.txt").is_file():
            return cls.from_vocab(path / "vocab.txt", lowercase=bool(cfg.get("do_lower_case", True)),
                                  model_max_length=max_len)
        raise FileNotFoundError(f"{path} has neither tokenizer.json nor vocab.txt")

    @classmethod
    def from_vocab(cls, vocab_file, lowercase: bool = True, model_max_length: int = 512) -> "Tokenizer":
        """Build BERT's WordPiece pipeline from a ``vocab.txt`` (one token per line)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        tok = HFTokenizer(WordPiece.from_file(str(vocab_file), unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, clean_text=True, handle_chinese_chars=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError(f"{vocab_file} has no [CLS]/[SEP] tokens")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        from tokenizers import decoders

        tok.decoder = decoders.WordPiece()
        return cls(tok, model_max_length)

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return self._tok.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, texts, text_pairs=None, max_length: int | None = None, padding="longest",
               truncation: bool = True) -> dict[str, np.ndarray]:
        """Encode a string or a list of strings (optionally with second segments).

        Args:
            texts: a string or list of strings.
            text_pairs: second segments for sentence-pair tasks (same length as ``texts``).
            max_length: truncate to this many tokens (default: ``model_max_length``).
            padding: ``"longest"`` (pad to the longest in the batch), ``"max_length"`` or
                False (only valid when all encodings have the same length).
            truncation: cut sequences longer than ``max_length`` (longest segment first).

        Returns:
            ``input_ids``, ``token_type_ids``, ``attention_mask``: int64 arrays (B, T).
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(text_pairs)} text pairs")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        max_length = max_length or self.model_max_length
        if truncation:
            self._tok.enable_truncation(max_length)
        else:
            self._tok.no_truncation()
        try:
            inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
            encs = self._tok.encode_batch(inputs)
        finally:
            self._tok.no_truncation()
        lengths = [len(e.ids) for e in encs]
        if padding == "max_length":
            width = max_length
        elif padding in ("longest", True):
            width = max(lengths) if lengths else 0
        elif padding in (False, None):
            if len(set(lengths)) > 1:
                raise ValueError("sequences have different lengths; use padding='longest'")
            width = lengths[0] if lengths else 0
        else:
            raise ValueError(f"padding must be 'longest', 'max_length' or False, got {padding!r}")
        b = len(encs)
        ids = np.full((b, width), self.pad_token_id, dtype=np.int64)
        types = np.zeros((b, width), dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        for i, e in enumerate(encs):
            n = min(len(e.ids), width)
            ids[i, :n] = e.ids[:n]
            types[i, :n] = e.type_ids[:n]
            mask[i, :n] = 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}

    __call__ = encode

    def encode_unpadded(self, texts, text_pairs=None, max_length: int | None = None) -> list:
        """Per-example ``(ids, type_ids)`` lists, truncated to ``max_length``, unpadded."""
        texts = list(texts)
        max_length = max_length or self.model_max_length
        self._tok.enable_truncation(max_length)
        try:
            inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
            encs = self._tok.encode_batch(inputs)
        finally:
            self._tok.no_truncation()
        return [(e.ids, e.type_ids) for e in encs]

    def encode_words(self, sentences) -> list:
        """Pre-split words (a list of word lists) to WordPiece ids without [CLS]/[SEP] and without
        truncation: per sentence ``(ids, word_ids)``, ``word_ids[k]`` the index of the word token
        ``k`` belongs to (the fast tokenizer's word ids)."""
        sentences = [list(map(str, words)) for words in sentences]
        out = []
        for words, enc in zip(sentences, self._tok.encode_batch(sentences, is_pretokenized=True,
                                                                 add_special_tokens=False)):
            word_ids = [-1 if w is None else int(w) for w in enc.word_ids]
            out.append((list(enc.ids), word_ids))
        return out

    def encode_windows(self, questions, contexts, max_length: int, stride: int) -> list:
        """Question / context pairs, the context cut into overlapping windows (``stride`` tokens
        shared by neighbours; the question is never cut). Per pair a list of windows, each a dict
        with ``ids``, ``type_ids``, ``offsets`` (character spans in the context; None outside it).

        Raises:
            ValueError: a question leaves the context no more room than the stride.
        """
        for k, enc in enumerate(self._tok.encode_batch(list(questions), add_special_tokens=False)):
            room = max_length - len(enc.ids) - 3  # [CLS] question [SEP] context [SEP]
            if room <= stride:
                raise ValueError(f"question {k + 1} takes {len(enc.ids)} tokens: max_length {max_length} leaves "
                                 f"{max(room, 0)} for the context, which must exceed the stride ({stride}); "
                                 "raise max_length or lower the stride")
        self._tok.enable_truncation(max_length, stride=stride, strategy="only_second")
        try:
            encs = self._tok.encode_batch(list(zip(questions, contexts)))
        finally:
            self._tok.no_truncation()
        out = []
        for enc in encs:
            windows = []
            for e in [enc] + list(enc.overflowing):
                seq = e.sequence_ids
                windows.append({"ids": list(e.ids), "type_ids": list(e.type_ids),
                                "offsets": [tuple(o) if s == 1 else None for o, s in zip(e.offsets, seq)]})
            out.append(windows)
        return out

    def get_vocab(self) -> dict:
        """The vocabulary, token → id."""
        return self._tok.get_vocab()

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (with [CLS] and [SEP])."""
        return self._tok.encode(text).tokens

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Turn ids back into text."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, path) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``path`` (atomically)."""
        from ..fileio import atomic_path, write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "tokenizer.json") as tmp:
            self._tok.save(str(tmp))
        write_json(path / "tokenizer_config.json",
                   {"tokenizer_class": "BertTokenizer", "model_max_length": self.model_max_length,
                    "do_lower_case": True, "pad_token": self.pad_token, "cls_token": self.cls_token,
                    "sep_token": self.sep_token, "unk_token": self.unk_token, "mask_token": self.mask_token})
        return path
