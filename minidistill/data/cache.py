"""A teacher-output cache: run the teacher once over (possibly unlabelled) transfer data and
keep its logits and chosen hidden states in memory-mapped files, so long distillation runs
need no teacher forward.

Layout of a cache folder::

    meta.json             fingerprint of the teacher and the data, shapes, examples done
    logits.f32            (N, C) float32, memory-mapped; (N, T, C) for token and QA heads
                          (one row per window, padded to T = max length; QA: C = 2, start and end)
    pooled.f32            (N, D) float32, the pooled [CLS] representation (when the teacher has a pooler)
    hidden_<i>.f32        (N, T, D) float32 for each cached hidden state i, padded to T

Memory stays bounded (one batch at a time is in RAM). Building is resumable: ``meta.json``
records how many examples are written and is replaced atomically only after their rows are
flushed to disk, so a build killed at any point resumes where the last flush ended and
gives the same files as a build done in one go. A cache whose teacher (config and weights)
or data (texts, max length) differ from the ones asked for is refused, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..core.tensor import no_grad
from ..fileio import CheckpointError, write_json


def model_fingerprint(model) -> str:
    """sha1 of a model's config and every weight's bytes."""
    h = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.numpy()).tobytes())
    return h.hexdigest()


def data_fingerprint(data, max_length: int) -> str:
    """sha1 of the texts (and pairs), the max length and, for windowed data, the window stride."""
    h = hashlib.sha1(str(max_length).encode())
    stride = getattr(data, "stride", getattr(data, "doc_stride", None))
    if stride is not None:
        h.update(f"stride={stride}".encode())
    for i, text in enumerate(data.texts):
        h.update(text.encode("utf-8") + b"\x00")
        if data.text_pairs is not None:
            h.update(data.text_pairs[i].encode("utf-8") + b"\x01")
    return h.hexdigest()


def _has_pooler(model) -> bool:
    base = getattr(model, model.base_model_prefix, model) if hasattr(model, "base_model_prefix") else model
    return getattr(base, "pooler", None) is not None


class TeacherCache:
    """Teacher outputs for every example of a dataset, on disk.

    Args:
        path: the cache folder.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text()) if (self.path / "meta.json").is_file() else None
        self._arrays = None  # read-only memory maps, opened on the first lookup

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, path, teacher, tokenizer, data, max_length: int = 128, hidden_states=(), batch_size: int = 64,
              _after_batch=None) -> "TeacherCache":
        """Write (or finish writing) the cache of ``teacher`` over ``data``.

        Args:
            hidden_states: indices of the hidden states to keep (0 = embeddings).
            _after_batch: test hook called with the number of examples done.

        Raises:
            CheckpointError: the folder holds a cache of another teacher or other data.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        encoded = data.encode(tokenizer, max_length)
        n = len(encoded)  # rows: examples, or windows of a windowed dataset
        per_token = getattr(getattr(data, "task", None), "kind", "sequence") in ("token", "qa")
        meta = {
            "format": "minidistill-teacher-cache-1",
            "teacher": model_fingerprint(teacher),
            "data": data_fingerprint(data, max_length),
            "n": n, "max_length": max_length, "num_labels": teacher.config.num_labels, "per_token": per_token,
            "hidden_size": teacher.config.hidden_size, "hidden_states": sorted(int(i) for i in hidden_states),
            "pooled": _has_pooler(teacher),
            "done": 0,
        }
        old = cls(path).meta
        if old is not None:
            for key in ("format", "teacher", "data", "hidden_states", "max_length", "pooled", "per_token"):
                if old.get(key) != meta[key]:
                    what = {"teacher": "another teacher (config or weights differ)",
                            "data": "other data (texts or max length differ)"}.get(key, f"a different {key}")
                    raise CheckpointError(f"{path} holds a cache of {what}; delete it or choose another folder")
            meta["done"] = old["done"]
        arrays = cls._open(path, meta, mode="r+" if old is not None else "w+")
        if old is None:
            write_json(path / "meta.json", meta)
        teacher.eval()
        order = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        with no_grad():
            for idx in order:
                if idx[-1] < meta["done"]:
                    continue  # written before the interruption
                batch = data.collate(encoded, idx, tokenizer.pad_token_id)
                out = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                              output_hidden_states=bool(meta["hidden_states"]))
                width = batch["input_ids"].shape[1]
                if per_token:  # (B, width, C), padded to the cache's length
                    arrays["logits"][idx, :width] = out.logits.numpy()
                    arrays["logits"][idx, width:] = 0.0
                else:
                    arrays["logits"][idx] = out.logits.numpy()
                if meta["pooled"]:
                    arrays["pooled"][idx] = out.pooler_output.numpy()
                for i in meta["hidden_states"]:
                    rows = arrays[f"hidden_{i}"]
                    rows[idx, :width] = out.hidden_states[i].numpy()
                    rows[idx, width:] = 0.0
                for a in arrays.values():
                    a.flush()  # rows on disk before the counter says so
                meta["done"] = int(idx[-1]) + 1
                write_json(path / "meta.json", meta)
                if _after_batch is not None:
                    _after_batch(meta["done"])
        return cls(path)

    @staticmethod
    def _open(path: Path, meta: dict, mode: str) -> dict:
        n, t, d = meta["n"], meta["max_length"], meta["hidden_size"]
        shape = (n, t, meta["num_labels"]) if meta.get("per_token") else (n, meta["num_labels"])
        arrays = {"logits": np.memmap(path / "logits.f32", np.float32, mode, shape=shape)}
        if meta.get("pooled"):
            arrays["pooled"] = np.memmap(path / "pooled.f32", np.float32, mode, shape=(n, d))
        for i in meta["hidden_states"]:
            arrays[f"hidden_{i}"] = np.memmap(path / f"hidden_{i}.f32", np.float32, mode, shape=(n, t, d))
        return arrays

    # ------------------------------------------------------------------- read
    @property
    def complete(self) -> bool:
        """True when every example has been written."""
        return self.meta is not None and self.meta["done"] == self.meta["n"]

    def check(self, teacher, data, max_length: int) -> None:
        """Raise unless this cache was built from ``teacher`` on ``data`` and is complete."""
        if self.meta is None:
            raise CheckpointError(f"{self.path} holds no teacher cache")
        if self.meta["teacher"] != model_fingerprint(teacher):
            raise CheckpointError(f"{self.path} was built from another teacher (config or weights differ)")
        if self.meta["data"] != data_fingerprint(data, max_length):
            raise CheckpointError(f"{self.path} was built on other data (texts or max length differ)")
        if not self.complete:
            raise CheckpointError(f"{self.path} is incomplete ({self.meta['done']} of {self.meta['n']}); build it again to finish")

    def lookup(self, indices, width: int | None = None) -> dict:
        """Cached outputs for examples ``indices``: ``logits`` (B, C) (or (B, width, C) per token), ``pooler_output``
        (B, D) or None, and ``hidden_states`` {i: (B, width, D)} (cut to the batch's padded width)."""
        if self.meta is None:
            raise CheckpointError(f"{self.path} holds no teacher cache")
        if self._arrays is None:
            self._arrays = self._open(self.path, self.meta, "r")
        arrays = self._arrays
        idx = np.asarray(indices)
        width = width or self.meta["max_length"]
        logits = arrays["logits"][idx, :width] if self.meta.get("per_token") else arrays["logits"][idx]
        out = {"logits": np.array(logits),
               "pooler_output": np.array(arrays["pooled"][idx]) if "pooled" in arrays else None}
        out["hidden_states"] = {i: np.array(arrays[f"hidden_{i}"][idx, :width]) for i in self.meta["hidden_states"]}
        return out
