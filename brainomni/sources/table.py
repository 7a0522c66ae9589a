"""The recordings table: crawl output as Arrow/Parquet, one row per recording, every field kept.

Columns are ``recording_id`` (the stable id of :class:`~brainomni.records.RecordingRef`),
every ``RecordingRef`` field in declaration order, and ``reason`` for tables of skipped
entries. Pair lists (``channel_types``, ``extra``) are lists of structs so that their order
survives. The schema version is stored in the Parquet metadata and checked on read.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from brainomni.io.commit import atomic_write_bytes
from brainomni.io.fs import get_fs
from brainomni.io.redact import redact
from brainomni.io.retry import retry
from brainomni.records import RecordingRef

SCHEMA_KEY = b"brainomni.recordings"
SCHEMA_VERSION = b"1"
_PAIR_FIELDS = {"channel_types": ("name", "type"), "extra": ("key", "value")}


def recordings_schema(with_reason: bool = False) -> Any:
    """The Arrow schema of the recordings table (``reason`` appended for skip tables)."""
    import pyarrow as pa

    types = {
        "line_freq": pa.float64(),
        "size": pa.int64(),
        "bad_channels": pa.list_(pa.string()),
        **{
            name: pa.list_(pa.struct([(a, pa.string()), (b, pa.string())]))
            for name, (a, b) in _PAIR_FIELDS.items()
        },
    }
    cols = [pa.field("recording_id", pa.string(), nullable=False)]
    for f in dataclasses.fields(RecordingRef):
        cols.append(pa.field(f.name, types.get(f.name, pa.string())))
    if with_reason:
        cols.append(pa.field("reason", pa.string()))
    return pa.schema(cols, metadata={SCHEMA_KEY: SCHEMA_VERSION})


def _pairs_column(values: Sequence[tuple[tuple[str, str], ...]], typ: Any) -> Any:
    """A ``list<struct>`` column of pair tuples, each distinct tuple object converted once.

    A dataset's recordings share their ``channels.tsv`` pairs (the crawl parses each
    distinct file content once and hands out the same tuple), so the distinct tuples are
    converted and the column is gathered from them by index in Arrow (C), instead of one
    Python dict per channel per recording (most of a 200,000-recording table's cost)."""
    import pyarrow as pa

    slot: dict[int, int] = {}
    uniq: list[tuple[tuple[str, str], ...]] = []
    index = []
    for v in values:
        k = slot.get(id(v))
        if k is None:
            k = slot[id(v)] = len(uniq)
            uniq.append(v)
        index.append(k)
    a, b = typ.value_type[0].name, typ.value_type[1].name
    distinct = pa.array([[{a: x, b: y} for x, y in v] for v in uniq], type=typ)
    return distinct.take(pa.array(index, type=pa.int32()))


def _batch(
    refs: Sequence[RecordingRef],
    reasons: Sequence[str] | None,
    schema: Any,
    ids: Sequence[str] | None = None,
) -> Any:
    import pyarrow as pa

    ids = [r.recording_id for r in refs] if ids is None else ids
    cols = {"recording_id": pa.array(ids, type=pa.string())}
    for f in dataclasses.fields(RecordingRef):
        typ = schema.field(f.name).type
        values = [getattr(r, f.name) for r in refs]
        if f.name in _PAIR_FIELDS:
            cols[f.name] = _pairs_column(values, typ)
        else:  # bad_channels: tuples are taken as lists by pa.array
            cols[f.name] = pa.array(values, type=typ)
    if reasons is not None:
        cols["reason"] = pa.array(list(reasons), type=pa.string())
    return pa.RecordBatch.from_arrays(list(cols.values()), schema=schema)


def recordings_table(
    refs: Iterable[RecordingRef],
    reasons: Sequence[str] | None = None,
    *,
    ids: Sequence[str] | None = None,
) -> Any:
    """A ``pyarrow.Table`` with one row per recording (and a ``reason`` column if given).

    ``ids``: the refs' recording ids when the caller has them (a sha256 each)."""
    import pyarrow as pa

    refs = list(refs)
    if reasons is not None and len(reasons) != len(refs):
        raise ValueError("recordings_table: one reason per recording is needed")
    if ids is not None and len(ids) != len(refs):
        raise ValueError("recordings_table: one id per recording is needed")
    schema = recordings_schema(reasons is not None)
    # Built a column at a time, a batch of recordings at a time: Python rows of every
    # recording at once (64 channel dicts each) took ~3.5 GB at 200,000 recordings.
    batches = [
        _batch(
            refs[i : i + _BATCH],
            None if reasons is None else reasons[i : i + _BATCH],
            schema,
            None if ids is None else ids[i : i + _BATCH],
        )
        for i in range(0, len(refs), _BATCH)
    ]
    return pa.Table.from_batches(batches, schema=schema)


_BATCH = 16384


def skipped_table(skipped: Iterable[tuple[RecordingRef, str]]) -> Any:
    """A recordings table of skipped entries with their ``reason``."""
    skipped = list(skipped)
    return recordings_table([r for r, _ in skipped], [why for _, why in skipped])


def refs_from_table(table: Any) -> list[RecordingRef]:
    """``RecordingRef`` objects back from a recordings table (ids are checked)."""
    names = {f.name for f in dataclasses.fields(RecordingRef)}
    refs = []
    for batch in table.to_batches(max_chunksize=_BATCH):  # bounded Python rows at a time
        refs.extend(_ref(row, names) for row in batch.to_pylist())
    return refs


def _ref(row: dict[str, Any], names: set[str]) -> RecordingRef:
    kw: dict[str, Any] = {}
    for key, value in row.items():
        if key not in names:
            continue
        if key in _PAIR_FIELDS:
            a, b = _PAIR_FIELDS[key]
            value = tuple((item[a], item[b]) for item in value or ())
        elif key == "bad_channels":
            value = tuple(value or ())
        kw[key] = value
    ref = RecordingRef(**kw)
    if row.get("recording_id") not in (None, ref.recording_id):
        raise ValueError(f"recordings table: id mismatch for {redact(ref.uri)}")
    return ref


def write_table(table: Any, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write an Arrow table as one Parquet file at ``url``, atomically (see storage)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(url, buf.getvalue(), storage_options)


def read_table(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """Read a recordings table written by :func:`write_table`; checks the schema version."""
    import pyarrow.parquet as pq

    fs, path = get_fs(url, storage_options)
    data = retry(lambda: fs.cat_file(path), what=f"read {url}")
    table = pq.read_table(io.BytesIO(data))
    version = (table.schema.metadata or {}).get(SCHEMA_KEY)
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{redact(url)} is not a recordings table of schema {SCHEMA_VERSION.decode()} "
            f"(found {version!r})"
        )
    return table


def write_recordings(
    refs: Iterable[RecordingRef], url: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write recordings to Parquet at ``url``."""
    write_table(recordings_table(refs), url, storage_options)


def read_recordings(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> list[RecordingRef]:
    """Recordings from a Parquet file written by :func:`write_recordings`."""
    return refs_from_table(read_table(url, storage_options))
