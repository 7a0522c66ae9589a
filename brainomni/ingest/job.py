"""The ingest job as a stage of the stage core (:mod:`brainomni.pipeline`): plan -> run
tasks -> compact -> summary.

:class:`IngestStage`'s units are the plan's tasks (one per recording still to do; the plan
resumes from the ledger itself: checksums and the config hash); one unit is
:func:`~brainomni.ingest.task.run_task`. Any executor of the core runs it:
``local`` (:class:`SerialExecutor` is its old name) or ``ray``
(:class:`brainomni.pipeline.ray.RayExecutor`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainomni.io.fs import check_storage_options
from brainomni.io.redact import redact
from brainomni.pipeline import Stage, Work, run_stage
from brainomni.pipeline.local import LocalExecutor
from brainomni.signal.config import DEFAULT_CONFIG, CleanConfig
from brainomni.sources import Source

from .ledger import LedgerRow
from .plan import plan
from .summary import FIXES, summarize
from .task import IngestTask, base_row, clean_orphans, now_iso, remove_partial, run_task

logger = logging.getLogger(__name__)


class SerialExecutor(LocalExecutor):
    """The local executor under its former name (``serial``)."""


@dataclass
class IngestStage(Stage):
    """Clean each planned recording into its store (see the module doc)."""

    name = "ingest"
    row_type = LedgerRow
    fixes = FIXES
    unit_label = "rec"

    dest: str = ""
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)
    tasks: Sequence[IngestTask] = ()
    crawl_skipped: Mapping[str, int] = field(default_factory=dict)
    orphans: int = 0

    def units(self) -> Sequence[IngestTask]:
        return self.tasks

    def key(self, unit: IngestTask) -> str:
        return unit.ref.recording_id

    def describe(self, unit: IngestTask) -> str:
        return redact(unit.ref.uri)

    def for_workers(self) -> IngestStage:
        return dataclasses.replace(self, tasks=())

    def worker_init(self) -> None:
        import mne

        mne.set_log_level("ERROR")

    def reuse(self, unit: IngestTask, prev: LedgerRow) -> bool:
        return False  # the plan already kept the final rows whose checksum and config match

    def run_unit(self, unit: IngestTask, *, attempt: int, worker: str) -> LedgerRow:
        if unit.attempt != attempt:
            unit = dataclasses.replace(unit, attempt=attempt)
        return run_task(unit, worker=worker, write_ledger=False)

    def failed_row(self, work: Work, error_class: str, reason: str, *, worker: str) -> LedgerRow:
        task = work.unit
        row = base_row(dataclasses.replace(task, attempt=work.attempt), worker=worker)
        row.outcome, row.error_class, row.reason = "failed", error_class, redact(reason)
        row.finished_at = now_iso()
        return row

    def clean_partial(self, unit: IngestTask) -> None:
        remove_partial(unit)

    def before_run(self) -> dict[str, Any]:
        self.orphans = len(clean_orphans(self.dest, dict(self.dest_storage_options)))
        return {}

    def after_run(self) -> dict[str, Any]:
        # every task has ended: any half-written store left (a killed worker) is an orphan
        self.orphans += len(clean_orphans(self.dest, dict(self.dest_storage_options)))
        return {"orphans_removed": self.orphans}

    def summarize(self, rows: Sequence[LedgerRow], run: Mapping[str, Any]) -> dict[str, Any]:
        return summarize(rows, crawl_skipped=self.crawl_skipped, run=run)


@dataclass(frozen=True)
class IngestJob:
    """What to ingest and where; checked when built."""

    sources: tuple[Source, ...]
    dest: str = "ingest-out"
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)
    config: CleanConfig = DEFAULT_CONFIG
    recrawl: bool = False
    limit: int | None = None
    cache_root: str | None = None
    progress_every_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("IngestJob.sources: give at least one --source or a --catalog")
        if not self.dest:
            raise ValueError("IngestJob.dest must be a path or URL")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"IngestJob.limit must be >= 1, got {self.limit}")
        check_storage_options(self.dest_storage_options)


def run_job(job: IngestJob, executor: Any = None) -> dict[str, Any]:
    """Run ``job`` with ``executor`` (an executor, or ``local``/``serial``/``ray``); the
    summary (also written to ``DEST/summary.json``)."""
    import time

    t0 = time.perf_counter()
    so = dict(job.dest_storage_options)
    p = plan(
        job.sources,
        job.dest,
        config=job.config,
        dest_storage_options=so,
        recrawl=job.recrawl,
        limit=job.limit,
        cache_root=job.cache_root,
    )
    crawl_skips: dict[str, int] = {}
    for _, reason in p.skipped:
        crawl_skips[reason] = crawl_skips.get(reason, 0) + 1
    stage = IngestStage(
        dest=job.dest, dest_storage_options=so, tasks=p.tasks, crawl_skipped=crawl_skips
    )
    facts = {
        "config_hash": job.config.hash,
        "fingerprint": p.fingerprint,
        "resumed": p.resumed,
        "not_rerun": len(p.done),
        "crawl_plan_s": round(time.perf_counter() - t0, 3),
    }
    result = run_stage(stage, executor, progress_every_s=job.progress_every_s, run_facts=facts)
    summary = result.summary
    missing = {r.recording_id for r in p.recordings} - {r.recording_id for r in result.rows}
    if missing:  # an executor that dropped work is a bug, not a data problem
        raise RuntimeError(f"{len(missing)} recordings of the plan have no ledger row")
    logger.info(
        "%d recordings %s, %.3f h written",
        summary["recordings"],
        summary["by_outcome"],
        summary["hours"],
    )
    return summary
