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

Commit protocol: a local store is written under a temporary sibling folder and renamed
into place (atomic on POSIX); on object storage (no rename) the prefix is cleared, written,
and the ``_COMPLETE`` marker is written last. Readers trust a store only with its marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from typing import Any

import numpy as np

from ..records import SensorTable
from ..storage import MARKER_NAME, StorageUnavailable, get_fs
from ..storage import read_marker as storage_read_marker

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


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _fs(uri: str, storage_options: dict | None):
    # the project's one way to reach storage: endpoint configuration, no credentials in options
    return get_fs(uri, storage_options)


def read_marker(uri: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The store's completion marker, or None when the store is absent or incomplete."""
    try:
        return storage_read_marker(uri, storage_options)
    except StorageUnavailable:
        raise  # an unreachable store is not an absent one: the caller records the outage
    except (json.JSONDecodeError, OSError):
        return None


def is_complete(
    uri: str,
    *,
    config_hash: str | None = None,
    checksum: str | None = None,
    storage_options: dict | None = None,
) -> bool:
    """True when a committed store exists for the same config hash and source checksum."""
    m = read_marker(uri, storage_options)
    if m is None:
        return False
    if config_hash is not None and m.get("config_hash") != config_hash:
        return False
    return not (checksum is not None and m.get("source_checksum") != checksum)


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
        if _is_local(uri):
            final = _local_path(self.uri)
            parent = os.path.dirname(os.path.abspath(final))
            os.makedirs(parent, exist_ok=True)
            self._work = os.path.join(
                parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}"
            )
            self._final = final
        else:
            fs, path = _fs(self.uri, storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
            self._work = self.uri
            self._final = self.uri
        try:  # a failure here must not leave the temporary folder behind
            self._group = self._open_group(self._work)
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

    def _open_group(self, where: str):
        import zarr

        if _is_local(where):
            return zarr.open_group(_local_path(where), mode="w", zarr_format=3)
        return zarr.open_group(where, mode="w", zarr_format=3, storage_options=self.storage_options)

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
        marker = {"format": FORMAT, "n_times": self.n_times, **marker}
        blob = json.dumps(marker, sort_keys=True).encode()
        if _is_local(self._work):
            with open(os.path.join(self._work, MARKER), "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if os.path.exists(self._final):
                old = f"{self._work}.old"
                os.rename(self._final, old)
            os.rename(self._work, self._final)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        else:
            fs, path = _fs(self._final, self.storage_options)
            with fs.open(f"{path}/{MARKER}", "wb") as f:
                f.write(blob)
        return self._final

    def abort(self) -> None:
        """Remove whatever was written (no-op for the final location of a local store)."""
        try:
            if _is_local(self._work):
                shutil.rmtree(self._work, ignore_errors=True)
            else:
                fs, path = _fs(self._work, self.storage_options)
                if fs.exists(path):
                    fs.rm(path, recursive=True)
        except OSError:  # pragma: no cover - best effort cleanup
            log.warning("could not clean up %s", self._work)


def open_recording(uri: str, storage_options: dict | None = None):
    """Open a committed store read-only; raises FileNotFoundError when incomplete."""
    import zarr

    if read_marker(uri, storage_options) is None:
        raise FileNotFoundError(f"{uri} is not a complete recording store (no {MARKER} marker)")
    if _is_local(uri):
        return zarr.open_group(_local_path(uri), mode="r", zarr_format=3)
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
