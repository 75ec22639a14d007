"""Dynamic masking for masked-language-model training (BERT's recipe).

Each batch is masked afresh when it is drawn: a share ``p`` (15%) of the non-special tokens is
chosen; of those, 80% become ``[MASK]``, 10% a random token of the vocabulary and 10% stay as
they are; the labels are the original ids at the chosen positions and -100 everywhere else,
so the loss is over the chosen positions only; ``token_mask`` marks the same positions, so KD on
the masked-LM logits (``SoftKD`` …, see ``compress.kd.logit_distributions``) counts them and
nothing else. Padding, ``[CLS]``, ``[SEP]`` (any special token) are never chosen.

With ``whole_word=True`` the choice is made per *word*: a word's WordPiece pieces (a first
piece and the ``##`` pieces after it) are chosen together, each word with probability ``p``,
and each chosen piece then gets its own 80/10/10 draw, as BERT's whole-word-masking release
did.

The draw is a function of ``(seed, step)`` only (``numpy.random.default_rng([seed, step])``),
so a resumed run masks exactly as the uninterrupted one, and every process of a data-parallel
run masks its rows of the global batch the same way.
"""

from __future__ import annotations

import numpy as np


class MaskingCollator:
    """Mask batches of token ids for masked-LM training.

    Args:
        tokenizer: the :class:`~minidistill.data.Tokenizer` (its vocabulary, ``[MASK]`` and
            special tokens).
        probability: the share of non-special tokens (or words) chosen.
        mask_share: of the chosen tokens, the share replaced by ``[MASK]``.
        random_share: of the chosen tokens, the share replaced by a random token (the rest stay).
        whole_word: choose whole words (all pieces of a word together).
        seed: the masking seed.
    """

    def __init__(self, tokenizer, probability: float = 0.15, mask_share: float = 0.8, random_share: float = 0.1,
                 whole_word: bool = False, seed: int = 0):
        if not 0.0 < probability < 1.0:
            raise ValueError(f"masking probability must lie in (0, 1), got {probability}")
        if mask_share < 0 or random_share < 0 or mask_share + random_share > 1.0:
            raise ValueError(f"mask_share ({mask_share}) and random_share ({random_share}) must be ≥ 0 and sum to ≤ 1")
        self.probability, self.mask_share, self.random_share = probability, mask_share, random_share
        self.whole_word, self.seed = whole_word, seed
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        self.vocab_size = size
        self.mask_id = tokenizer.mask_token_id
        self.special = np.zeros(size, dtype=bool)  # ids never masked
        self.continuation = np.zeros(size, dtype=bool)  # "##" pieces: they continue the word before
        for token, i in vocab.items():
            if token.startswith("[") and token.endswith("]"):
                self.special[i] = True
            elif token.startswith("##"):
                self.continuation[i] = True
        self.special[[tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]] = True
        self.normal_ids = np.nonzero(~self.special)[0]  # what a random replacement draws from

    def __call__(self, batch: dict, step: int) -> dict:
        """A copy of ``batch`` with ``input_ids`` masked and ``labels`` (B, T) set (-100 where
        nothing was chosen), drawn from ``(seed, step)``."""
        ids = np.asarray(batch["input_ids"])  # (B, T)
        attention = np.asarray(batch.get("attention_mask", np.ones_like(ids))) != 0
        candidate = attention & ~self.special[ids]  # (B, T) real, non-special tokens
        rng = np.random.default_rng([self.seed, int(step)])
        if self.whole_word:
            chosen = self._choose_words(ids, candidate, rng)
        else:
            chosen = candidate & (rng.random(ids.shape) < self.probability)
        u = rng.random(ids.shape)
        to_mask = chosen & (u < self.mask_share)
        to_random = chosen & (u >= self.mask_share) & (u < self.mask_share + self.random_share)
        masked = ids.copy()
        masked[to_mask] = self.mask_id
        masked[to_random] = self.normal_ids[rng.integers(0, len(self.normal_ids), size=int(to_random.sum()))]
        labels = np.where(chosen, ids, -100)
        # token_mask: the positions the logit objectives count (KD on masked-LM logits: the masked ones)
        return {**batch, "input_ids": masked, "labels": labels.astype(np.int64), "token_mask": chosen.astype(np.int64)}

    def _choose_words(self, ids, candidate, rng) -> np.ndarray:
        """Chosen positions when whole words are drawn: a word starts at a candidate that is not
        a ``##`` piece (or follows a non-candidate), and its pieces share its draw."""
        starts = candidate & ~(self.continuation[ids] & np.concatenate(
            [np.zeros((ids.shape[0], 1), bool), candidate[:, :-1]], axis=1))  # (B, T)
        word = np.cumsum(starts, axis=1)  # (B, T) word number within the row (1-based at a start)
        draws = rng.random((ids.shape[0], ids.shape[1] + 1)) < self.probability  # one draw per word slot
        return candidate & np.take_along_axis(draws, word, axis=1)


def whole_words(ids, tokens) -> list:
    """The words of a row of ids as lists of positions (pieces grouped by ``##``), special
    tokens left out; ``tokens`` maps id → token string (``tokenizer.get_vocab()`` inverted).
    For checks and teaching."""
    words, current = [], []
    for k, i in enumerate(np.asarray(ids).tolist()):
        token = tokens.get(int(i), "")
        if token.startswith("[") and token.endswith("]"):
            if current:
                words.append(current)
            current = []
            continue
        if token.startswith("##") and current:
            current.append(k)
        else:
            if current:
                words.append(current)
            current = [k]
    if current:
        words.append(current)
    return words
