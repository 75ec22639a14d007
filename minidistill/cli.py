"""The ``minidistill`` command line: a thin layer over the public API.

    minidistill demo [--backends numpy,numba,torch] [--sentences ...]
    minidistill info MODEL_DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

DEMO_SENTENCES = [
    "A distilled student keeps most of what its teacher knows.",
    "Knowledge distillation compresses a large model into a small one.",
    "The cat sat quietly on the warm windowsill.",
    "This film is a quiet triumph of patient storytelling.",
]


def _default_backends() -> list[str]:
    names = ["numpy", "numba"]
    if importlib.util.find_spec("torch") is not None:
        names.append("torch")
    return names


def sentence_embeddings(model, enc) -> np.ndarray:
    """Mean-pooled, L2-normalised token states (all-MiniLM-L6-v2's sentence embedding)."""
    import minidistill as md

    with md.no_grad():
        h = model(**enc).last_hidden_state.numpy()  # (B, T, D)
    mask = enc["attention_mask"][..., None].astype(h.dtype)  # (B, T, 1)
    pooled = (h * mask).sum(1) / np.maximum(mask.sum(1), 1.0)  # (B, D)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def demo(backends: list[str], sentences: list[str]) -> int:
    """Load the real MiniLM-L6 checkpoint and embed ``sentences`` on each backend."""
    import minidistill as md
    from minidistill.data import Tokenizer
    from minidistill.models import BertModel

    path = md.assets.path("minilm-l6")
    print(f"checkpoint: {md.assets.ASSETS['minilm-l6'].description}\n  at {path}")
    tok = Tokenizer.from_pretrained(path)
    enc = tok.encode(sentences)
    print(f"batch: {len(sentences)} sentences, padded to {enc['input_ids'].shape[1]} tokens\n")
    results = {}
    for name in backends:
        model = BertModel.from_pretrained(path, backend=name)
        sentence_embeddings(model, enc)  # warm-up (compiles Numba kernels on first use)
        start = time.perf_counter()
        emb = sentence_embeddings(model, enc)
        ms = (time.perf_counter() - start) * 1e3
        results[name] = emb
        print(f"[{name}] {model.num_parameters() / 1e6:.1f}M parameters, forward {ms:.1f} ms")
    ref = results[backends[0]]
    sims = ref @ ref.T
    print("\ncosine similarity of the sentence embeddings:")
    for i, s in enumerate(sentences):
        row = " ".join(f"{v:5.2f}" for v in sims[i])
        print(f"  {row}   {s[:60]}")
    for name in backends[1:]:
        diff = float(np.abs(results[name] - ref).max())
        print(f"max |{name} - {backends[0]}| = {diff:.2e}")
    return 0


def info(model_dir: str) -> int:
    """Print a checkpoint's config and parameter counts."""
    from minidistill.models import BertConfig
    from minidistill.models.io import load_weights, read_config

    cfg = BertConfig.from_dict(read_config(model_dir))
    weights = load_weights(model_dir)
    total = sum(int(np.prod(w.shape)) for k, w in weights.items() if not k.endswith("position_ids"))
    print(f"{model_dir}: BERT, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_attention_heads} heads, FFN {cfg.intermediate_size}, vocab {cfg.vocab_size}")
    print(f"parameters: {total:,}")
    layer = 4 * cfg.hidden_size**2 + 2 * cfg.hidden_size * cfg.intermediate_size
    print(f"matmul FLOPs per token (forward, excluding attention scores): {2 * cfg.num_hidden_layers * layer:,}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``minidistill`` console script."""
    parser = argparse.ArgumentParser(prog="minidistill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the real MiniLM-L6 checkpoint on every backend")
    p_demo.add_argument("--backends", default=",".join(_default_backends()),
                        help="comma-separated backends (default: all installed)")
    p_demo.add_argument("--sentences", nargs="+", default=DEMO_SENTENCES)
    p_info = sub.add_parser("info", help="describe a checkpoint folder")
    p_info.add_argument("model_dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo([b.strip() for b in args.backends.split(",") if b.strip()], args.sentences)
        return info(args.model_dir)
    except (FileNotFoundError, ValueError, KeyError, ImportError, RuntimeError) as e:
        print(f"minidistill: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
