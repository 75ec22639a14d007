"""Data: tokenisation (more loaders arrive with the training issue)."""

from .tokenizer import Tokenizer

__all__ = ["Tokenizer"]
