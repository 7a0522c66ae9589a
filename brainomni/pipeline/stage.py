"""The stage declaration and the one function that runs a unit anywhere.

A stage (subclass :class:`Stage`) declares:

* :meth:`Stage.units` — its units of work, from a frozen input list (called once, in the
  driver); :meth:`Stage.key` names each unit (the ledger key: unique, stable);
* :meth:`Stage.run_unit` — how one unit runs (on any worker); it checks the unit's
  completion marker first (a unit whose output is already committed is not redone) and
  returns the unit's ledger row;
* :meth:`Stage.reuse` — whether an earlier run's final ledger row stands without running the
  unit again;
* the ledger row (``row_type``, default :class:`StageRow`) and :meth:`Stage.failed_row`.

:func:`execute` wraps :meth:`Stage.run_unit` the same way under every executor: transient
object-store errors are retried for the retry window, an error the stage expects for bad
input (``expected_errors``) is a ``failed`` row with that class, anything else a ``failed``
row ``Unexpected.<Class>`` (logged with its traceback, partial output removed); the row is
written as a ledger part from the worker, so a killed driver loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from brainomni.io.redact import describe_error, redact
from brainomni.io.retry import RetryPolicy, StorageUnavailable, retry

from .ledger import FINAL_OUTCOMES, Ledger

logger = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class StageRow:
    """What happened to one unit in one attempt (the generic ledger row)."""

    LEDGER_TAG: ClassVar[tuple[bytes, bytes]] = (b"brainomni.stage-ledger", b"1")

    key: str
    stage: str = ""
    outcome: str = "failed"  # ok | skipped | failed
    reason: str = ""
    error_class: str = ""
    output: str = ""  # redacted URL of the unit's committed output
    items: int = 0  # what the unit produced, counted (samples, windows, channels...)
    bytes_out: int | None = None
    detail: str = ""  # JSON, the stage's own (e.g. a shard's index)
    t_unit_s: float | None = None  # seconds, retries included
    tries: int = 1
    attempt: int = 1  # run that produced this row, per unit
    worker: str = ""
    finished_at: str = ""  # ISO 8601, UTC

    @property
    def sort_key(self) -> Any:
        return self.key


@dataclass(frozen=True, slots=True, order=True)
class Work:
    """One unit handed to an executor: its key, the unit and the attempt number (ordered
    by key)."""

    key: str
    unit: Any = field(compare=False)
    attempt: int = field(default=1, compare=False)


class Stage:
    """Base of every stage; see the module doc. Instances are shipped to workers (pickled by
    Ray): keep them small, plain data (the units travel separately, one per task)."""

    name: ClassVar[str] = "stage"
    row_type: ClassVar[type] = StageRow
    # errors bad input raises in run_unit: a failed row with that class, never Unexpected
    expected_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    # what to do per error class in the summary (exact class or the part before a dot)
    fixes: ClassVar[Mapping[str, str]] = {}
    cpus: ClassVar[float] = 1.0  # per unit, on Ray
    memory: ClassVar[int] = 1 << 30  # bytes reserved per unit on Ray
    unit_label: ClassVar[str] = "unit"  # progress lines: "<label>/s"

    dest: str = ""
    dest_storage_options: Mapping[str, Any] = {}
    retry_policy: RetryPolicy | None = None  # None: the default window

    # ---- declared by each stage
    def units(self) -> Sequence[Any]:
        raise NotImplementedError

    def key(self, unit: Any) -> str:
        raise NotImplementedError

    def run_unit(self, unit: Any, *, attempt: int, worker: str) -> Any:
        raise NotImplementedError

    # ---- defaults a stage may override
    def describe(self, unit: Any) -> str:
        """How failure reasons name a unit (default: its key)."""
        return self.key(unit)

    def for_workers(self) -> Stage:
        """The stage as shipped to workers (default: itself); a stage that holds its unit
        list returns a copy without it (units travel one per task)."""
        return self

    def worker_init(self) -> None:
        """Called on a Ray worker before a unit runs (e.g. quiet a library's logging)."""

    def reuse(self, unit: Any, prev: Any) -> bool:
        """Whether ``prev`` (this unit's final row of an earlier run) stands as is."""
        return prev.outcome in FINAL_OUTCOMES

    def failed_row(self, work: Work, error_class: str, reason: str, *, worker: str) -> Any:
        return StageRow(
            key=work.key,
            stage=self.name,
            outcome="failed",
            error_class=error_class,
            reason=redact(reason),
            attempt=work.attempt,
            worker=worker,
            finished_at=now_iso(),
        )

    def clean_partial(self, unit: Any) -> None:
        """Remove what a unit that died half-way left (temp files); nothing by default."""

    def before_run(self) -> dict[str, Any]:
        """Called once in the driver before the units run (e.g. remove orphans); facts for
        the summary's ``run`` entry."""
        return {}

    def after_run(self) -> dict[str, Any]:
        """Called once in the driver after every unit ended (before compaction)."""
        return {}

    def summarize(self, rows: Sequence[Any], run: Mapping[str, Any]) -> dict[str, Any]:
        from .summary import summarize

        return summarize(rows, run=run, fixes=self.fixes)

    def ledger(self) -> Ledger:
        return Ledger(self.dest, self.row_type, self.dest_storage_options)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def execute(stage: Stage, work: Work, *, worker: str = "", write_ledger: bool = True) -> Any:
    """Run one unit (see the module doc); its row. Never raises for the unit."""
    worker = worker or default_worker()
    t0 = time.perf_counter()
    tries = 0

    def once() -> Any:
        nonlocal tries
        tries += 1
        return stage.run_unit(work.unit, attempt=work.attempt, worker=worker)

    what = stage.describe(work.unit)
    try:
        row = retry(once, stage.retry_policy, what=f"{stage.name} {work.key}")
    except StorageUnavailable as exc:
        row = stage.failed_row(
            work,
            "StorageUnavailable",
            f"{what}: {describe_error(exc)}; rerun to retry it",
            worker=worker,
        )
    except stage.expected_errors as exc:
        row = stage.failed_row(
            work, type(exc).__name__, f"{what}: {_first_line(exc)}", worker=worker
        )
        stage.clean_partial(work.unit)
    except Exception as exc:  # noqa: BLE001 - last resort: one unit never stops a run
        logger.exception("%s %s: unexpected error", stage.name, work.key)
        row = stage.failed_row(
            work,
            f"Unexpected.{type(exc).__name__}",
            f"{what}: unexpected {type(exc).__name__} ({_first_line(exc)}); a case "
            "brainomni does not handle yet: report it (the worker log has the traceback)",
            worker=worker,
        )
        stage.clean_partial(work.unit)
    if isinstance(row, StageRow):
        row.stage = stage.name
        row.t_unit_s = round(time.perf_counter() - t0, 4)
        row.tries = max(row.tries, tries)
    row.attempt, row.worker = work.attempt, row.worker or worker
    row.finished_at = row.finished_at or now_iso()
    if write_ledger:
        write_row(stage, row)
    return row


def write_row(stage: Stage, row: Any) -> None:
    """Write ``row``'s ledger part; a store that stays unreachable is logged (the row still
    reaches the driver, which compacts it in)."""
    try:
        stage.ledger().write(row)
    except StorageUnavailable as exc:
        logger.error(
            "ledger part of %s not written, the run keeps the row: %s", row.key, describe_error(exc)
        )


__all__ = ["Stage", "StageRow", "Work", "execute", "now_iso", "write_row"]
