"""Shared fixtures and helpers: backends, the real MiniLM-L6 checkpoint, the tiny BERTs and toy
data the tests build models from, and input helpers. Test modules import helpers from here only,
never from each other."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import minidistill as md
from minidistill.data import TextDataset, Tokenizer
from minidistill.data.datasets import TaskSpec
from minidistill.models import BertConfig, BertForSequenceClassification

HAS_TORCH = importlib.util.find_spec("torch") is not None
CPU_BACKENDS = ["numpy", "numba"]
ALL_BACKENDS = CPU_BACKENDS + (["torch"] if HAS_TORCH else [])
#: the CPU backends for a long check: NumPy in the fast loop, Numba (whose kernels have their own
#: fast parity tests) only in the whole suite
CPU_BACKENDS_LONG = ["numpy", pytest.param("numba", marks=pytest.mark.slow)]


def pytest_configure(config):
    """Register the course tasks' markers (``task2_3``) from ``minidistill.course``, where the
    titles are written once."""
    from minidistill.course.tasks import TASKS

    for task in TASKS.values():
        config.addinivalue_line("markers", f"{task.marker}: course task {task.id}, {task.title}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(pytest.mark.skip(reason="torch is not installed"))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each backend in turn, made current for the test."""
    with md.use_backend(request.param) as ops:
        yield ops


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """The NumPy and Numba backends in turn."""
    with md.use_backend(request.param) as ops:
        yield ops


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2 checkpoint (fetched into the cache on first use)."""
    return md.assets.path("minilm-l6")


@pytest.fixture(scope="module")
def tok(minilm_path):
    """The MiniLM-L6 WordPiece tokenizer (one per test module)."""
    return Tokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, minilm_path):
    """A saved 4-layer, 32-wide BERT classifier (rotten / fresh) over the real vocabulary, with
    the real tokenizer: a teacher the CLI trains from in seconds."""
    from minidistill.data import Tokenizer

    folder = tmp_path_factory.mktemp("tiny-teacher")
    model = tiny_bert(0, layers=4)
    model.config.id2label, model.config.label2id = {0: "rotten", 1: "fresh"}, {"rotten": 0, "fresh": 1}
    model.save_pretrained(folder)
    Tokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


SENTENCES = [
    "The film is a quiet triumph of patient storytelling.",
    "Dull, overlong and predictable.",
    "A distilled model keeps most of what its teacher knows, at a fraction of the cost.",
    "Short one.",
]


def rand(shape, seed=0, scale=1.0, dtype="float64"):
    """Seeded normal samples."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------ tiny models and data
def tiny_bert(seed=0, layers=2, labels=2, vocab=30522, dropout=0.0):
    """A 2-layer, 32-wide BERT classifier over the real vocabulary (float32), seeded."""
    md.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=labels,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(cfg)


def toy_data(n=32, seed=0):
    """``n`` short texts over ten words with random binary labels (a task to overfit)."""
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "film", "plot", "actor", "scene", "dull", "great", "music", "story"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 9))) + f" {i}" for i in range(n)]
    task = TaskSpec("toy", "text", None, "label", ("0", "1"), ("accuracy",))
    return TextDataset(texts, None, rng.integers(0, 2, n).astype(np.int64), task)


#: token ids and mask of a padded batch for the 30-word toy vocabulary of :func:`toy_teacher`
IDS = np.array([[2, 7, 9, 11, 5, 3, 0], [2, 4, 13, 3, 0, 0, 0], [2, 21, 8, 17, 6, 19, 3]])
MASK = (IDS != 0).astype(np.int64)


def toy_config(**kw) -> BertConfig:
    """A 16-wide, 2-layer config over a 30-word vocabulary with 3 labels (``kw`` overrides)."""
    base = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertConfig(**{**base, **kw})


def toy_teacher(cls=BertForSequenceClassification, dtype="float64", seed=0, **kw):
    """A :func:`toy_config` model in ``dtype`` and eval mode, seeded."""
    md.manual_seed(seed)
    model = cls(toy_config(**kw))
    model.to(dtype=dtype)
    return model.eval()


def randomise(model, seed=1, scale=0.3):
    """Move every parameter by seeded noise (non-identity compactors, nothing left as inherited)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.backend.asarray(p.numpy() + scale * rng.standard_normal(p.shape), dtype=p.dtype.name)
