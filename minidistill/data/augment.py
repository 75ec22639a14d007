"""Text augmentation for transfer data: more unlabelled inputs for the teacher to label.

Distillation works best with far more inputs than a task's labelled set; when no other
unlabelled text is at hand, perturbed copies of the training texts serve (TinyBERT's
augmentation replaces words, XtremeDistil's transfer sets are unlabelled task text). Each
word of a copy is, independently,

* replaced by the tokenizer's mask token with probability ``p_mask``,
* replaced by a random whole word of the vocabulary with probability ``p_replace``,
* kept otherwise.

Copies carry no labels: a perturbed sentence may not keep its label, and the teacher
labels it anyway. Augmentation is seeded and deterministic.
"""

from __future__ import annotations

import numpy as np

from .datasets import DataError, TextDataset


def _word_vocabulary(tokenizer) -> list[str]:
    """Whole alphabetic words of the vocabulary (no ``##`` pieces, no special tokens)."""
    vocab = tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(w) > 1 and not w.startswith("["))
    if not words:
        raise DataError("the tokenizer's vocabulary has no whole words to sample replacements from")
    return words


def augment(data: TextDataset, tokenizer, copies: int = 4, p_mask: float = 0.1, p_replace: float = 0.1,
            seed: int = 0, keep_original: bool = True) -> TextDataset:
    """Unlabelled transfer data: ``data``'s texts (if ``keep_original``) and ``copies``
    perturbed copies of each.

    Args:
        data: the texts to perturb (pairs are perturbed too).
        tokenizer: supplies the mask token and the replacement vocabulary.
        copies: perturbed copies per text.
        p_mask: per-word probability of masking.
        p_replace: per-word probability of random replacement.
        seed: the generator's seed.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if not (0.0 <= p_mask and 0.0 <= p_replace and p_mask + p_replace <= 1.0):
        raise ValueError(f"p_mask ({p_mask}) and p_replace ({p_replace}) must be >= 0 with a sum <= 1")
    rng = np.random.default_rng(seed)
    words = _word_vocabulary(tokenizer)

    def perturb(text: str) -> str:
        tokens = text.split()
        u = rng.random(len(tokens))
        picks = rng.integers(0, len(words), len(tokens))
        out = [tokenizer.mask_token if r < p_mask else words[k] if r < p_mask + p_replace else w
               for w, r, k in zip(tokens, u, picks)]
        return " ".join(out)

    texts = list(data.texts) if keep_original else []
    pairs = (list(data.text_pairs) if keep_original else []) if data.text_pairs is not None else None
    for _ in range(copies):
        for i, text in enumerate(data.texts):
            texts.append(perturb(text))
            if pairs is not None:
                pairs.append(perturb(data.text_pairs[i]))
    return TextDataset(texts, pairs, None, data.task)
