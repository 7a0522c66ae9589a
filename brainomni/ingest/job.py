"""The ingest job, independent of where it runs: plan -> run tasks -> compact -> summary.

An executor is anything with ``run(tasks, on_result)`` that calls :func:`run_task` for each
task (in any order, anywhere) and hands every row back to ``on_result`` in the driver.
:class:`SerialExecutor` runs them in this process; ``brainomni.executors.ray_executor``
runs them as Ray tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from brainomni.signal.config import DEFAULT_CONFIG, CleanConfig
from brainomni.sources import Source
from brainomni.storage import check_storage_options, redact

from .ledger import LedgerRow, compact
from .plan import plan
from .progress import Progress
from .summary import summarize, write_summary
from .task import IngestTask, clean_orphans, run_task

logger = logging.getLogger(__name__)


class Executor(Protocol):
    def run(self, tasks: Sequence[IngestTask], on_result: Callable[[LedgerRow], None]) -> None: ...


class SerialExecutor:
    """Runs tasks one after another in this process (tests, debugging, benchmarks)."""

    name = "serial"

    def run(self, tasks: Sequence[IngestTask], on_result: Callable[[LedgerRow], None]) -> None:
        for task in tasks:
            on_result(run_task(task, worker="serial"))


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


def run_job(job: IngestJob, executor: Executor) -> dict[str, Any]:
    """Run ``job`` with ``executor``; the summary (also written to ``DEST/summary.json``)."""
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
    orphans = clean_orphans(job.dest, so)
    t_plan = time.perf_counter() - t0
    progress = Progress(len(p.tasks), every_s=job.progress_every_s)
    received: list[LedgerRow] = []  # every row, also those whose part could not be written

    def on_result(row: LedgerRow) -> None:
        received.append(row)
        progress.update(row)

    if p.tasks:
        executor.run(p.tasks, on_result)
        logger.info(progress.line())
    t_run = time.perf_counter() - t0 - t_plan
    # every task has ended: any half-written store left (a killed worker) is an orphan
    orphans += clean_orphans(job.dest, so)
    rows = compact(job.dest, so, received=received)
    crawl_skips: dict[str, int] = {}
    for _, reason in p.skipped:
        crawl_skips[reason] = crawl_skips.get(reason, 0) + 1
    run = {
        "executor": getattr(executor, "name", type(executor).__name__),
        "dest": redact(job.dest),
        "config_hash": job.config.hash,
        "fingerprint": p.fingerprint,
        "resumed": p.resumed,
        "ran": progress.done,
        "not_rerun": len(p.done),
        "orphans_removed": len(orphans),
        "plan_s": round(t_plan, 3),
        "executor_startup_s": getattr(executor, "startup_s", 0.0),
        "executor_shutdown_s": getattr(executor, "shutdown_s", 0.0),
        "run_s": round(t_run, 3),
        "total_s": round(time.perf_counter() - t0, 3),
    }
    summary = summarize(rows, crawl_skipped=crawl_skips, run=run)
    missing = {r.recording_id for r in p.recordings} - {r.recording_id for r in rows}
    if missing:  # an executor that dropped work is a bug, not a data problem
        raise RuntimeError(f"{len(missing)} recordings of the plan have no ledger row")
    url = write_summary(job.dest, summary, so)
    logger.info(
        "%d recordings %s, %.3f h written; summary at %s",
        summary["recordings"],
        summary["by_outcome"],
        summary["hours"],
        redact(url),
    )
    return summary
