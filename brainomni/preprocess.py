"""Moved to :mod:`brainomni.clean` (kept this wave as a re-export so callers keep importing)."""

from .clean import PreprocessResult, preprocess_recording

__all__ = ["PreprocessResult", "preprocess_recording"]
