"""Cleaning one recording, each room with one job.

- :mod:`.recording`: orchestration: open, sensor table, the passes, commit the store
  (:func:`preprocess_recording`, the per-recording entry point of the CLI and the ingest job).
- :mod:`.passes`: the two passes over the signal (:class:`~.passes.Cleaner`).
- :mod:`.qc`: the QC dict stored with the recording and the bad-fraction rule.
- :mod:`.inspect`: the report (:class:`PreprocessResult` and its JSON).

BIDS sidecars (``electrodes.tsv``, ``channels.tsv``) are read by :mod:`brainomni.sources.sidecars`.
"""

from .inspect import PreprocessResult
from .recording import preprocess_recording

__all__ = ["PreprocessResult", "preprocess_recording"]
