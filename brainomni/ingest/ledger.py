"""The ingest ledger: one row per recording and attempt, as small Parquet parts, compacted.

Each finished recording appends ``DEST/ledger/part-<recording_id>-<attempt:04d>.parquet``
(written atomically, see :func:`brainomni.storage.atomic_write_bytes`). At the end of a job
:func:`compact` folds every part and the previous ``DEST/ledger.parquet`` into a new
``DEST/ledger.parquet`` with one row per recording (the latest attempt wins), then removes
the folded parts. A job killed at any moment leaves parts and/or a compacted file whose union,
deduplicated the same way, is the ledger; nothing is ever counted twice.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from brainomni.storage import atomic_write_bytes, get_fs, join_url, retry, to_url

logger = logging.getLogger(__name__)

LEDGER_FILE = "ledger.parquet"
PARTS_DIR = "ledger"
SCHEMA_KEY = b"brainomni.ledger"
SCHEMA_VERSION = b"1"
ALREADY_DONE = "already done"


@dataclass(slots=True)
class LedgerRow:
    """What happened to one recording in one attempt. Durations in seconds, sizes in bytes."""

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


def ledger_schema() -> Any:
    """The Arrow schema of ledger parts and of the compacted ledger."""
    import pyarrow as pa

    kinds = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    cols = []
    hints = {f.name: f.type for f in dataclasses.fields(LedgerRow)}
    for name, hint in hints.items():
        text = str(hint)
        base = int if text.startswith("int") else float if text.startswith("float") else str
        cols.append(pa.field(name, kinds[base], nullable=name != "recording_id"))
    return pa.schema(cols, metadata={SCHEMA_KEY: SCHEMA_VERSION})


def rows_table(rows: Iterable[LedgerRow]) -> Any:
    import pyarrow as pa

    # columns straight from the slots: dataclasses.asdict deep-copies every field (~1 ms a
    # row; 200,000 rows took minutes)
    names = [f.name for f in dataclasses.fields(LedgerRow)]
    rows = list(rows)
    cols = {n: [getattr(r, n) for r in rows] for n in names}
    return pa.Table.from_pydict(cols, schema=ledger_schema())


def table_rows(table: Any) -> list[LedgerRow]:
    names = {f.name for f in dataclasses.fields(LedgerRow)}
    out = []
    for row in table.to_pylist():
        out.append(LedgerRow(**{k: v for k, v in row.items() if k in names and v is not None}))
    return out


def _parquet_bytes(rows: Iterable[LedgerRow]) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(rows_table(rows), buf, compression="zstd")
    return buf.getvalue()


def part_name(recording_id: str, attempt: int) -> str:
    return f"part-{recording_id}-{attempt:04d}.parquet"


def write_part(dest: str, row: LedgerRow, storage_options: Mapping[str, Any] | None = None) -> str:
    """Append ``row`` as its own atomically written part; the part's URL."""
    url = join_url(dest, PARTS_DIR, part_name(row.recording_id, row.attempt))
    atomic_write_bytes(url, _parquet_bytes([row]), storage_options)
    return url


def _read_parquet(fs: Any, path: str) -> Any:
    import pyarrow.parquet as pq

    data = retry(lambda: fs.cat_file(path), what=f"read {path}")
    table = pq.read_table(io.BytesIO(data))
    if (table.schema.metadata or {}).get(SCHEMA_KEY) != SCHEMA_VERSION:
        raise ValueError(f"{path} is not a ledger of schema {SCHEMA_VERSION.decode()}")
    return table


def _part_paths(fs: Any, dest_path: str) -> list[str]:
    base = f"{dest_path}/{PARTS_DIR}"
    fs.invalidate_cache(base)
    if not retry(lambda: fs.exists(base), what="list ledger"):
        return []
    names = retry(lambda: fs.ls(base, detail=False), what="list ledger")
    return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith("part-"))


def dedupe(rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    """One row per recording: the highest attempt wins (then the latest ``finished_at``)."""
    best: dict[str, LedgerRow] = {}
    for row in rows:
        cur = best.get(row.recording_id)
        if cur is None or (row.attempt, row.finished_at) >= (cur.attempt, cur.finished_at):
            best[row.recording_id] = row
    return sorted(best.values(), key=lambda r: (r.dataset, r.relpath, r.recording_id))


def read_ledger(
    dest: str, storage_options: Mapping[str, Any] | None = None, *, raw: bool = False
) -> list[LedgerRow]:
    """Every ledger row under ``dest`` (compacted file and parts), deduplicated unless ``raw``."""
    fs, path = get_fs(dest, storage_options)
    rows: list[LedgerRow] = []
    compacted = f"{path}/{LEDGER_FILE}"
    fs.invalidate_cache(compacted)
    if retry(lambda: fs.exists(compacted), what="ledger exists"):
        rows += table_rows(_read_parquet(fs, compacted))
    for part in _part_paths(fs, path):
        rows += table_rows(_read_parquet(fs, part))
    return rows if raw else dedupe(rows)


def compact(
    dest: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    received: Iterable[LedgerRow] = (),
) -> list[LedgerRow]:
    """Fold the parts into ``DEST/ledger.parquet`` (one row per recording); the rows.

    ``received`` are rows the driver already holds (the executors hand every task's row
    back, also those whose part could not be written while the store was unreachable): a
    part named after one of them is not read again, only removed. At 200,000
    recordings that is the difference between 200,000 small reads and none; the parts of
    an earlier, killed driver are still read. The compacted file is written (atomically)
    before any folded part is removed, so a kill in between only leaves parts that dedupe
    away on the next read. Parts are removed in batches (one bulk request per 1,000 keys
    on object stores).
    """
    fs, path = get_fs(dest, storage_options)
    parts = _part_paths(fs, path)
    have = {part_name(r.recording_id, r.attempt): r for r in received}
    rows: list[LedgerRow] = []
    compacted = f"{path}/{LEDGER_FILE}"
    fs.invalidate_cache(compacted)
    if retry(lambda: fs.exists(compacted), what="ledger exists"):
        rows += table_rows(_read_parquet(fs, compacted))
    n_read = 0
    for part in parts:
        if part.rsplit("/", 1)[-1] not in have:
            rows += table_rows(_read_parquet(fs, part))
            n_read += 1
    rows = dedupe([*rows, *have.values()])
    atomic_write_bytes(join_url(dest, LEDGER_FILE), _parquet_bytes(rows), storage_options)
    for i in range(0, len(parts), 1000):
        batch = parts[i : i + 1000]
        retry(lambda b=batch: fs.rm(b), what="remove ledger parts")
    logger.info(
        "ledger %s: %d rows (%d parts folded, %d read)",
        to_url(fs, f"{path}/{LEDGER_FILE}"),
        len(rows),
        len(parts),
        n_read,
    )
    return rows
