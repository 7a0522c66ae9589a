"""A stage's ledger: one row per unit and attempt, as small Parquet parts, compacted.

Each finished unit appends ``DEST/ledger/part-<key>-<attempt:04d>.parquet`` (written
atomically, see :func:`brainomni.io.commit.atomic_write_bytes`). At the end of a run
:meth:`Ledger.compact` folds every part and the previous ``DEST/ledger.parquet`` into a new
``DEST/ledger.parquet`` with one row per unit (the latest attempt wins), then removes the
folded parts. A run killed at any moment leaves parts and/or a compacted file whose union,
deduplicated the same way, is the ledger; nothing is ever counted twice.

Rows are slotted dataclasses with ``outcome``, ``reason``, ``error_class``, ``attempt``,
``worker`` and ``finished_at`` fields and a ``key`` (the unit's id); their class names the
schema tag (``LEDGER_TAG``). :class:`~brainomni.pipeline.stage.StageRow` is the generic row;
ingest keeps its richer ``LedgerRow`` (key: the recording id).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from brainomni.io.commit import atomic_write_bytes
from brainomni.io.fs import get_fs, join_url, to_url
from brainomni.io.retry import retry

logger = logging.getLogger(__name__)

LEDGER_FILE = "ledger.parquet"
PARTS_DIR = "ledger"
FINAL_OUTCOMES = ("ok", "skipped")  # a failed unit is tried again by the next run
ALREADY_DONE = "already done"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def part_name(key: str, attempt: int) -> str:
    """``part-<key>-<attempt>.parquet``; a key that is not file-name safe (``/``, spaces...)
    is spelled safely plus 12 hex digits of its sha256, so distinct keys never collide."""
    if not _SAFE.match(key):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:100]
        key = f"{safe}~{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return f"part-{key}-{attempt:04d}.parquet"


@functools.cache
def schema(row_type: type) -> Any:
    """The Arrow schema of ``row_type``'s parts and compacted ledger (from its fields)."""
    import pyarrow as pa

    kinds = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    cols = []
    fields = dataclasses.fields(row_type)
    for f in fields:
        text = str(f.type)
        base = int if text.startswith("int") else float if text.startswith("float") else str
        cols.append(pa.field(f.name, kinds[base], nullable=f is not fields[0]))
    tag, version = row_type.LEDGER_TAG
    return pa.schema(cols, metadata={tag: version})


def rows_table(rows: Iterable[Any], row_type: type) -> Any:
    import pyarrow as pa

    # columns straight from the slots: dataclasses.asdict deep-copies every field (~1 ms a
    # row; 200,000 rows took minutes)
    names = [f.name for f in dataclasses.fields(row_type)]
    rows = list(rows)
    cols = {n: [getattr(r, n) for r in rows] for n in names}
    return pa.Table.from_pydict(cols, schema=schema(row_type))


def table_rows(table: Any, row_type: type) -> list[Any]:
    """Rows of a ledger table. Values are checked against the field types (a ledger is a
    file: not trusted); a row that does not fit raises ``ValueError`` naming the column."""
    fields = {f.name: f for f in dataclasses.fields(row_type)}
    sch = schema(row_type)
    want = {n: sch.field(n).type for n in fields}
    for name in table.column_names:
        if name in want and table.schema.field(name).type != want[name]:
            raise ValueError(f"ledger column {name!r} has type {table.schema.field(name).type}")
    out = []
    for row in table.to_pylist():
        out.append(row_type(**{k: v for k, v in row.items() if k in fields and v is not None}))
    return out


def dedupe(rows: Iterable[Any]) -> list[Any]:
    """One row per key: the highest attempt wins (then the latest ``finished_at``); sorted by
    the row type's ``sort_key`` (its key by default)."""
    best: dict[str, Any] = {}
    for row in rows:
        cur = best.get(row.key)
        if cur is None or (row.attempt, row.finished_at) >= (cur.attempt, cur.finished_at):
            best[row.key] = row
    return sorted(best.values(), key=lambda r: r.sort_key)


class Ledger:
    """The ledger of one stage under ``dest`` (a folder or URL), rows of ``row_type``."""

    def __init__(
        self, dest: str, row_type: type, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.dest, self.row_type = dest, row_type
        self.storage_options = dict(storage_options or {})

    def _bytes(self, rows: Iterable[Any]) -> bytes:
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(rows_table(rows, self.row_type), buf, compression="zstd")
        return buf.getvalue()

    def write(self, row: Any) -> str:
        """Append ``row`` as its own atomically written part; the part's URL."""
        url = join_url(self.dest, PARTS_DIR, part_name(row.key, row.attempt))
        atomic_write_bytes(url, self._bytes([row]), self.storage_options)
        return url

    def _read(self, fs: Any, path: str) -> list[Any]:
        import pyarrow.parquet as pq

        data = retry(lambda: fs.cat_file(path), what=f"read {path}")
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several classes for junk
            raise ValueError(
                f"{path} is not a readable Parquet ledger ({type(exc).__name__}); remove it "
                "(the units it recorded are then redone)"
            ) from exc
        tag, version = self.row_type.LEDGER_TAG
        if (table.schema.metadata or {}).get(tag) != version:
            raise ValueError(
                f"{path} is not a ledger of {tag.decode()}/{version.decode()}: another "
                "stage's ledger, or another version; use another destination"
            )
        return table_rows(table, self.row_type)

    def _parts(self, fs: Any, path: str) -> list[str]:
        base = f"{path}/{PARTS_DIR}"
        fs.invalidate_cache(base)
        if not retry(lambda: fs.exists(base), what="list ledger"):
            return []
        names = retry(lambda: fs.ls(base, detail=False), what="list ledger")
        return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith("part-"))

    def _compacted(self, fs: Any, path: str) -> list[Any]:
        compacted = f"{path}/{LEDGER_FILE}"
        fs.invalidate_cache(compacted)
        if retry(lambda: fs.exists(compacted), what="ledger exists"):
            return self._read(fs, compacted)
        return []

    def exists(self) -> bool:
        fs, path = get_fs(self.dest, self.storage_options)
        fs.invalidate_cache(path)
        return bool(retry(lambda: fs.exists(f"{path}/{LEDGER_FILE}"), what="ledger exists")) or (
            bool(self._parts(fs, path))
        )

    def read(self, *, raw: bool = False) -> list[Any]:
        """Every row (compacted file and parts), deduplicated unless ``raw``."""
        fs, path = get_fs(self.dest, self.storage_options)
        rows = self._compacted(fs, path)
        for part in self._parts(fs, path):
            rows += self._read(fs, part)
        return rows if raw else dedupe(rows)

    def compact(self, received: Iterable[Any] = ()) -> list[Any]:
        """Fold the parts into ``DEST/ledger.parquet`` (one row per key); the rows.

        ``received`` are rows the driver already holds (executors hand every unit's row
        back, also those whose part could not be written while the store was unreachable):
        a part named after one of them is not read again, only removed. At 200,000 units
        that is the difference between 200,000 small reads and none; the parts of an
        earlier, killed driver are still read. The compacted file is written (atomically)
        before any folded part is removed, so a kill in between only leaves parts that
        dedupe away on the next read. Parts are removed in batches (one bulk request per
        1,000 keys on object stores).
        """
        fs, path = get_fs(self.dest, self.storage_options)
        parts = self._parts(fs, path)
        have = {part_name(r.key, r.attempt): r for r in received}
        rows = self._compacted(fs, path)
        n_read = 0
        for part in parts:
            if part.rsplit("/", 1)[-1] not in have:
                rows += self._read(fs, part)
                n_read += 1
        rows = dedupe([*rows, *have.values()])
        atomic_write_bytes(
            join_url(self.dest, LEDGER_FILE), self._bytes(rows), self.storage_options
        )
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
