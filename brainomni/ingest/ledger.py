"""The ingest ledger: one row per recording and attempt, as small Arrow IPC parts, compacted into Parquet.

The machinery is the stage core's (:class:`brainomni.pipeline.ledger.Ledger`): each finished
recording appends ``DEST/ledger/part-<recording_id>-<attempt:04d>.arrow``; at the end of a
job the parts and the previous ``DEST/ledger.parquet`` are folded into a new
``DEST/ledger.parquet`` with one row per recording (the latest attempt wins). This module
keeps the ingest row (:class:`LedgerRow`, key: the recording id) and the function names the
rest of the code and the tests use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from brainomni.pipeline import ledger as _core
from brainomni.pipeline.ledger import (  # noqa: F401  (re-exported)
    ALREADY_DONE,
    LEDGER_FILE,
    PARTS_DIR,
    Ledger,
)

logger = logging.getLogger(__name__)

SCHEMA_KEY = b"brainomni.ledger"
SCHEMA_VERSION = b"1"


@dataclass(slots=True)
class LedgerRow:
    """What happened to one recording in one attempt. Durations in seconds, sizes in bytes."""

    LEDGER_TAG: ClassVar[tuple[bytes, bytes]] = (SCHEMA_KEY, SCHEMA_VERSION)
    KEY_COLUMN: ClassVar[str] = "recording_id"  # the stage core's unit key
    SORT_COLUMNS: ClassVar[tuple[str, ...]] = ("dataset", "relpath", "recording_id")

    recording_id: str
    uri: str  # redacted
    dataset: str = ""
    dataset_version: str = ""
    relpath: str = ""
    subject: str = ""
    session: str = ""
    task: str = ""
    run: str = ""
    modality: str = ""
    format: str = ""
    outcome: str = "failed"  # ok | skipped | failed
    reason: str = ""
    error_class: str = ""
    duration_s: float | None = None  # input duration
    output_hours: float = 0.0  # hours of cleaned signal written
    sfreq_in: float | None = None  # Hz
    n_eeg: int = 0
    n_mag: int = 0
    n_grad: int = 0
    n_bad: int = 0  # channels interpolated
    line_freq: float | None = None  # Hz, the one used
    line_freq_source: str = ""
    t_open_s: float | None = None
    t_filter_s: float | None = None
    t_second_pass_s: float | None = None
    t_preprocess_s: float | None = None  # preprocess_recording, the whole call
    t_task_s: float | None = None  # the task, completeness check and retries included
    tries: int = 1  # calls of preprocess_recording (transient retries included)
    bytes_in: int | None = None
    bytes_out: int | None = None
    store: str = ""  # redacted URL of the committed store
    source_checksum: str = ""
    config_hash: str = ""
    fixes: str = ""  # JSON summary of the catalog channel fixes applied (sensors/fixes.py)
    attempt: int = 1  # job run that produced this row, per recording
    worker: str = ""  # node/process that ran it
    finished_at: str = ""  # ISO 8601, UTC

    @property
    def hours(self) -> float:
        return self.output_hours

    @property
    def key(self) -> str:  # the stage core's unit key
        return self.recording_id

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.dataset, self.relpath, self.recording_id)


def ledger_schema() -> Any:
    """The Arrow schema of ledger parts and of the compacted ledger."""
    return _core.schema(LedgerRow)


def rows_table(rows: Iterable[LedgerRow]) -> Any:
    return _core.rows_table(rows, LedgerRow)


def table_rows(table: Any) -> list[LedgerRow]:
    return _core.table_rows(table, LedgerRow)


def part_name(recording_id: str, attempt: int) -> str:
    return _core.part_name(recording_id, attempt)


def dedupe(rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    """One row per recording: the highest attempt wins (then the latest ``finished_at``)."""
    return _core.dedupe(rows)


def write_part(dest: str, row: LedgerRow, storage_options: Mapping[str, Any] | None = None) -> str:
    """Append ``row`` as its own atomically written part; the part's URL."""
    return Ledger(dest, LedgerRow, storage_options).write(row)


def read_ledger(
    dest: str, storage_options: Mapping[str, Any] | None = None, *, raw: bool = False
) -> list[LedgerRow]:
    """Every ledger row under ``dest`` (compacted file and parts), deduplicated unless ``raw``."""
    return Ledger(dest, LedgerRow, storage_options).read(raw=raw)


def compact(
    dest: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    received: Iterable[LedgerRow] = (),
) -> list[LedgerRow]:
    """Fold the parts into ``DEST/ledger.parquet`` (see :meth:`Ledger.compact`); the rows."""
    return Ledger(dest, LedgerRow, storage_options).compact(received)


_SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}$")


def ok_stores(dest: str, storage_options: Mapping[str, Any] | None = None) -> list[str] | None:
    """The committed stores of the ``ok`` rows of the ingest ledger under ``dest`` (an
    ingest destination), sorted: the frozen input list of the stages that read a corpus
    (pack, the QC report). ``None`` when ``dest`` holds no ingest ledger. Row values are
    file content: a recording id that is not a plain file name is refused (``ValueError``
    naming the ledger)."""
    from brainomni.io.fs import join_url
    from brainomni.io.redact import redact

    from .task import store_key_for

    ledger = Ledger(dest, LedgerRow, storage_options)
    if not ledger.exists():
        return None
    stores = []
    for row in ledger.read():
        if row.outcome != "ok":
            continue
        if not _SAFE_ID.match(row.recording_id):
            raise ValueError(
                f"the ingest ledger under {redact(dest)} holds the recording id "
                f"{row.recording_id[:80]!r}, not a plain name: the ledger is damaged or not "
                "brainomni's; rerun the ingest into a fresh destination"
            )
        stores.append(join_url(dest, store_key_for(row.dataset, row.recording_id)))
    logger.info(
        "%d stores from the ok rows of the ingest ledger under %s", len(stores), redact(dest)
    )
    return sorted(stores)
