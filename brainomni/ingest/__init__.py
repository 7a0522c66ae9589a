"""The ingest job's library side: plan (frozen work list), per-recording task, ledger,
progress and summary; the job is a stage of the stage core (:mod:`brainomni.pipeline`),
run by its executors (``local``, ``ray``: Ray appears only in ``brainomni.pipeline.ray``).

Layout under ``DEST``::

    crawl/recordings.parquet  crawl/skipped.parquet  crawl/plan.json   frozen work list
    recordings/<dataset>/<recording_id>.zarr/                          stores (_COMPLETE last)
    ledger/part-<recording_id>-<attempt>.arrow                         rows while running
    ledger/seg-<time>-<token>-<n>.parquet                              rows folded while running
    ledger.parquet                                                     compacted ledger
    summary.json
"""

from __future__ import annotations

from brainomni.pipeline.progress import Progress

from .job import IngestJob, IngestStage, SerialExecutor, run_job
from .ledger import LedgerRow, compact, dedupe, read_ledger, write_part
from .plan import Plan, PlanChanged, plan
from .summary import format_summary, summarize
from .task import IngestTask, run_task, store_key

__all__ = [
    "IngestJob",
    "IngestStage",
    "IngestTask",
    "LedgerRow",
    "Plan",
    "PlanChanged",
    "Progress",
    "SerialExecutor",
    "compact",
    "dedupe",
    "format_summary",
    "plan",
    "read_ledger",
    "run_job",
    "run_task",
    "store_key",
    "summarize",
    "write_part",
]
