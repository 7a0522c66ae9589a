"""The per-recording store: one Zarr v3 group per cleaned recording.

Layout (``STORE.zarr/``)::

    zarr.json            group attributes (below)
    signal/              float32 (C, T), SI units (V, T, T/m), 256 Hz; chunks (64 rows,
                         or a group-aligned height: :func:`row_chunk_for`; 30 s),
                         uncompressed by default (``compress=True``: blosc lz4 + shuffle)
    sensor_pos/          float32 (C, 3), metres
    sensor_ori/          float32 (C, 3), unit vectors (MEG), zeros (EEG)
    sensor_type/         int8 (C,), EEG 0, MAG 1, GRAD 2
    _COMPLETE            JSON marker, written last: the store exists only once it is there

Group attributes: ``format`` ("brainomni.recording"), ``format_version``, ``ch_names``,
``sfreq``, ``n_times``, ``pos_source``, ``dropped``, ``config`` and ``config_hash``,
``provenance`` (source URI, checksum, reader, code version, rate error) and ``qc``.

Commit: :class:`brainomni.io.commit.DirectoryCommit` (the project's one protocol): a local
store is written as the staging sibling ``.<name>.tmp-<8 hex>`` and renamed into place; on
object storage the old marker and objects are removed first, the store is written in place
and the ``_COMPLETE`` marker last. Readers trust a store only with its marker.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..io import commit
from ..io.commit import MARKER_NAME
from ..records import SensorTable

log = logging.getLogger(__name__)

FORMAT = "brainomni.recording"
FORMAT_VERSION = 1
MARKER = MARKER_NAME
CHUNK_SECONDS = 30
ROW_CHUNK = 64  # channels per chunk: a correction pass rewrites only the rows it changes
# Filtered float32 signals hardly compress: lz4 + shuffle made a one-hour Neuromag store
# 1.14x smaller for 2.2x the write CPU (1.2 CPU-s per recording-hour; bench_preprocess), so
# the signal is stored raw unless a writer asks for compression.
COMPRESS_SIGNAL = False


def row_chunk_for(types) -> int:
    """Channels per chunk for a store whose rows have these sensor types.

    A correction pass mixes channels within a modality group (EEG; MEG = MAG + GRAD) and
    rewrites whole row chunks, so when the rows hold two contiguous groups (MEG then EEG,
    as FIF, CTF and most files order them) the chunk height is a divisor of the first
    group's size between 32 and 128, which puts the boundary on a chunk edge: a fix to the
    EEG rows then reads and writes only EEG chunks. Among those, the one that pads the
    second group's last chunk least (zarr stores edge chunks whole), then the largest.
    Otherwise ``ROW_CHUNK``.
    """
    t = np.asarray(types)
    if t.size == 0:
        return ROW_CHUNK
    eeg = (t == 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(eeg)) + 1
    if edges.size == 1:
        b, rest = int(edges[0]), int(t.size - edges[0])
        fits = [c for c in range(32, min(128, b) + 1) if b % c == 0]
        if fits:
            return min(fits, key=lambda c: ((-rest) % c, -c))
    return ROW_CHUNK


def read_marker(uri: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The store's completion marker, or None when the store is absent or incomplete
    (:func:`brainomni.io.commit.read_marker`: an unreachable store raises)."""
    return commit.read_marker(uri, storage_options)


def is_complete(
    uri: str,
    *,
    config_hash: str | None = None,
    checksum: str | None = None,
    storage_options: dict | None = None,
) -> bool:
    """True when a committed store exists for the same config hash and source checksum."""
    return commit.is_complete(
        uri, storage_options, config_hash=config_hash, source_checksum=checksum
    )


class RecordingStoreWriter:
    """Writes one recording's store; nothing is visible until :meth:`commit`."""

    def __init__(
        self,
        uri: str,
        *,
        n_channels: int,
        n_times: int,
        sfreq: float,
        storage_options: dict | None = None,
        compress: bool = COMPRESS_SIGNAL,
        row_chunk: int = ROW_CHUNK,
    ) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options
        self.n_channels = n_channels
        self.n_times = n_times
        self.sfreq = sfreq
        self.chunk = int(CHUNK_SECONDS * sfreq)
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        self._written = 0
        self._commit = commit.DirectoryCommit(self.uri, storage_options)
        try:  # a failure here must not leave the temporary folder behind
            self._group = self._open_group()
            self._signal = self._group.create_array(
                "signal",
                shape=(n_channels, n_times),
                chunks=(max(1, min(row_chunk, n_channels)), min(self.chunk, max(1, n_times))),
                dtype="float32",
                compressors=[self._codec()] if compress else None,
                fill_value=0.0,
                # every chunk is written once, whole: skip zarr's all-fill-value check
                config={"write_empty_chunks": True},
            )
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def _codec():
        from zarr.codecs import BloscCodec

        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")

    def _open_group(self):
        import zarr

        c = self._commit
        if c.local:
            return zarr.open_group(c.path, mode="w", zarr_format=3)
        return zarr.open_group(c.url, mode="w", zarr_format=3, storage_options=self.storage_options)

    def append(self, y: np.ndarray) -> None:
        """Append consecutive samples (C, n); writes happen on whole chunks. ``y`` is not
        kept: the caller may reuse it."""
        if y.shape[0] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {y.shape[0]}")
        y = np.asarray(y, dtype=np.float32)
        if self._buffered:  # complete the pending chunk first
            take = min(self.chunk - self._buffered, y.shape[1])
            self._buf.append(np.array(y[:, :take]))
            self._buffered += take
            y = y[:, take:]
            if self._buffered < self.chunk:
                return
            self._flush(final=False)
        n = (y.shape[1] // self.chunk) * self.chunk  # whole chunks straight from ``y``
        if n:
            self._write(y[:, :n])
        if y.shape[1] > n:
            self._buf = [np.array(y[:, n:])]
            self._buffered = y.shape[1] - n

    def _write(self, data: np.ndarray) -> None:
        end = min(self._written + data.shape[1], self.n_times)
        self._signal[:, self._written : end] = data[:, : end - self._written]
        self._written = end

    def _flush(self, *, final: bool) -> None:
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else np.concatenate(self._buf, axis=1)
        n = data.shape[1] if final else (data.shape[1] // self.chunk) * self.chunk
        if n:
            self._write(data[:, :n])
        rest = data[:, n:]
        self._buf = [rest] if rest.shape[1] else []
        self._buffered = rest.shape[1]

    def commit(self, table: SensorTable, attrs: dict[str, Any], marker: dict[str, Any]) -> str:
        """Write sensor arrays, attributes and the marker; make the store visible."""
        self._flush(final=True)
        if self._written != self.n_times:
            raise RuntimeError(f"store has {self._written} of {self.n_times} samples")
        g = self._group
        g.create_array("sensor_pos", data=np.asarray(table.pos, dtype=np.float32))
        g.create_array("sensor_ori", data=np.asarray(table.ori, dtype=np.float32))
        g.create_array("sensor_type", data=np.asarray(table.types, dtype=np.int8))
        g.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "ch_names": list(table.names),
                "sfreq": self.sfreq,
                "n_times": self.n_times,
                "pos_source": list(table.pos_source),
                "dropped": [{"name": d.name, "reason": d.reason} for d in table.dropped],
                **attrs,
            }
        )
        return self._commit.commit({"format": FORMAT, "n_times": self.n_times, **marker})

    def abort(self) -> None:
        """Remove whatever was written (never a store published earlier on local disk)."""
        self._commit.abort()


def open_recording(uri: str, storage_options: dict | None = None):
    """Open a committed store read-only; raises FileNotFoundError when incomplete."""
    import zarr

    if read_marker(uri, storage_options) is None:
        raise FileNotFoundError(f"{uri} is not a complete recording store (no {MARKER} marker)")
    if "://" not in uri or uri.startswith("file://"):
        return zarr.open_group(uri.removeprefix("file://"), mode="r", zarr_format=3)
    return zarr.open_group(uri, mode="r", zarr_format=3, storage_options=storage_options)


def rewrite_signal(writer: RecordingStoreWriter, fn, rows=None, reads=None) -> None:
    """Apply ``fn(y) -> y`` (C, n) in place over an uncommitted store's signal.

    ``rows``: the channels whose new values are kept (None = all): only their row chunks are
    written back, and the other rows of those chunks keep their stored values whatever
    ``fn`` did to them. ``reads``: the channels ``fn`` needs (None = all): only their row
    chunks (and the written ones) are read; the other rows of ``y`` are zeros.
    """
    writer._flush(final=True)
    sig = writer._signal
    n, rc = writer.n_channels, sig.chunks[0]

    def chunks_of(sel):
        return sorted({int(r) // rc for r in (range(n) if sel is None else sel)})

    write_groups = chunks_of(rows)
    read_groups = sorted(set(chunks_of(reads)) | set(write_groups))
    spans = [(g * rc, min(n, (g + 1) * rc)) for g in range(-(-n // rc))]
    kept = set(range(n)) if rows is None else {int(r) for r in rows}
    # rows that share a written chunk with changed rows but must not change
    guard = np.array(
        [r for g in write_groups for r in range(*spans[g]) if r not in kept], dtype=np.intp
    )
    step = writer.chunk * 4
    for a in range(0, writer.n_times, step):
        b = min(writer.n_times, a + step)
        # fresh zeros each time: large ones are untouched zero pages until a row is used
        y = np.zeros((n, b - a), dtype=np.float32)
        for g in read_groups:
            lo, hi = spans[g]
            y[lo:hi] = sig[lo:hi, a:b]
        saved = y[guard] if guard.size else None
        y = fn(y)
        if saved is not None:
            y[guard] = saved
        for g in write_groups:
            lo, hi = spans[g]
            sig[lo:hi, a:b] = y[lo:hi]
