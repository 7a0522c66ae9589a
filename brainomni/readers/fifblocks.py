"""A direct block reader for FIF raw data: MNE's ``get_data`` values at a third of the cost.

MNE reads a FIF data buffer as float64, transposed, then gathers the picked channels and
multiplies by the calibrations: three strided passes over every sample, after a copy out of
the page cache. Ingest reads the whole recording once, and on one-hour MEG recordings those
passes cost about as much as the filtering itself. :class:`FifBlockReader` maps the file,
swaps each buffer to native order in one contiguous pass, gathers the picked channels and
writes ``x * cal - offset`` straight into the caller's float32 block.

Arithmetic: integer and double buffers are calibrated in float64, exactly as MNE does, so
those results are bit-identical to ``(raw.get_data(picks) - offset).astype(float32)``.
Float buffers (the samples are float32 already) are calibrated in float32: within a few
float32 ulps of ``|x * cal|``, the precision the file itself stores them with (tested).

It covers plain (not preloaded) FIF raw files, split files included, without an applied
projector or compensation, whose buffers are float, int, short or double. Anything else, or
any surprise while it checks itself against ``get_data`` on the first samples and around
every split boundary, returns ``None`` from :func:`fif_block_reader` and the caller keeps
MNE's path. It relies on fields of MNE's FIF reader (``_raw_extras``: tag entries and buffer
bounds; ``_read_picks``; ``_first_samps``; ``_raw_lengths``) and that self-check guards
against their changing.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os

import numpy as np

from brainomni.errors import RecordingFailed

log = logging.getLogger(__name__)

# FIFF tag types of raw data buffers (short, int, float, double, dau_pack16) -> dtypes
_DTYPES = {2: ">i2", 3: ">i4", 4: ">f4", 5: ">f8", 16: ">i2"}  # 16: DAU_PACK16
_PIECE = 2048  # samples per gather: keeps the float64 product in the L2 cache


class FifBlockReader:
    """``read_into(out, start, stop, offset)``: channels ``picks`` of samples
    ``[start, stop)`` as ``x * cal - offset`` in the float32 array ``out`` (C, stop - start).
    Also callable as ``reader(start, stop)`` -> float64 ``x * cal`` (``get_data``'s values)."""

    def __init__(self, raw, picks: np.ndarray) -> None:
        self.raw = raw
        self.picks = np.asarray(picks, dtype=np.intp)
        self.cals = np.asarray(raw._cals, dtype=np.float64)[self.picks][:, None]
        self.cals32 = self.cals.astype(np.float32)
        self.first_samps = [int(s) for s in raw._first_samps]
        self.last_samps = [int(s) for s in raw._last_samps]
        self.cumul = np.cumsum([0, *[int(n) for n in raw._raw_lengths]])
        self.files = []
        for fi, ex in enumerate(raw._raw_extras):
            ents = ex["ent"]
            types = {e.type for e in ents if e is not None}
            if not types <= set(_DTYPES) or len(types) > 1:
                raise ValueError(f"buffer types {sorted(types)}")
            dt = np.dtype(_DTYPES[types.pop()]) if types else np.dtype(">f4")
            orig = np.asarray(raw._read_picks[fi], dtype=np.intp)[self.picks]
            self.files.append(
                {
                    "filename": os.fspath(ex["filename"]),
                    "bounds": np.asarray(ex["bounds"], dtype=np.int64),
                    "ents": ents,
                    "nchan": int(ex["orig_nchan"]),
                    "dtype": dt,
                    "native": dt.newbyteorder("="),
                    "picks": orig,
                }
            )
        self._maps: dict[int, mmap.mmap] = {}

    def close(self) -> None:
        for m in self._maps.values():
            with contextlib.suppress(BufferError):  # a caller still holds a view
                m.close()
        self._maps.clear()

    def _map(self, fi: int) -> mmap.mmap:
        """The file mapped read-only (no copy out of the page cache), read ahead."""
        m = self._maps.get(fi)
        if m is None:
            with open(self.files[fi]["filename"], "rb") as fh:
                m = self._maps[fi] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(m, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                m.madvise(mmap.MADV_SEQUENTIAL)
        return m

    def __call__(self, start: int, stop: int) -> np.ndarray:
        return self.raw.get_data(picks=self.picks, start=start, stop=stop)

    def read_into(
        self, out: np.ndarray, start: int, stop: int, offset: np.ndarray | None = None
    ) -> None:
        off = np.zeros((self.picks.size, 1)) if offset is None else offset
        off = np.asarray(off, dtype=np.float64).reshape(-1, 1)
        if not (0 <= start < stop <= self.raw.n_times) or out.shape != (
            self.picks.size,
            stop - start,
        ):
            raise ValueError(f"bad read [{start}, {stop}) into {out.shape}")
        pos = 0
        for fi in range(len(self.files)):
            lo, hi = int(self.cumul[fi]), int(self.cumul[fi + 1])
            if stop <= lo or start >= hi:
                continue
            a = self.first_samps[fi] + max(start, lo) - lo
            b = min(stop - lo + self.first_samps[fi], self.last_samps[fi] + 1)
            self._read_file(fi, a, b, out[:, pos : pos + (b - a)], off)
            pos += b - a
        if pos != stop - start:  # pragma: no cover - guarded by the self-check
            raise RuntimeError("FIF block reader: segment arithmetic is off")

    def _read_file(
        self, fi: int, start: int, stop: int, out: np.ndarray, offset: np.ndarray
    ) -> None:
        f = self.files[fi]
        bounds, ents, nchan, picks = f["bounds"], f["ents"], f["nchan"], f["picks"]
        mm = self._map(fi)
        dt = f["dtype"]
        single = dt.kind == "f" and dt.itemsize == 4
        off32 = offset.astype(np.float32) if single else None
        use = np.flatnonzero((stop > bounds[:-1]) & (start < bounds[1:]))
        for ei in use:
            first, last = int(bounds[ei]), int(bounds[ei + 1])
            s0, s1 = max(start - first, 0), min(last, stop) - first
            o0 = first + s0 - start
            ent = ents[ei]
            if ent is None:  # a gap: MNE gives zeros
                np.subtract(0.0, offset, out=out[:, o0 : o0 + s1 - s0], casting="unsafe")
                continue
            count = (last - first) * nchan
            if ent.pos + 16 + count * dt.itemsize > len(mm):
                raise RecordingFailed(
                    f"{f['filename']}: data buffer at byte {ent.pos} runs past the end of the "
                    "file (truncated); copy the complete file",
                    error_class="TruncatedFile",
                )
            buf = np.frombuffer(mm, dtype=dt, count=count, offset=ent.pos + 16)
            buf = buf.reshape(last - first, nchan)
            for p0 in range(s0, s1, _PIECE):
                p1 = min(s1, p0 + _PIECE)
                dst = out[:, o0 + p0 - s0 : o0 + p1 - s0]
                native = buf[p0:p1].astype(f["native"])  # one contiguous swap
                gathered = native.T[picks]  # (C, n)
                if single:  # float32 samples: calibrate in float32
                    np.multiply(gathered, self.cals32, out=dst)
                    np.subtract(dst, off32, out=dst)
                else:  # integers and doubles: float64, as MNE
                    scaled = np.multiply(gathered, self.cals)
                    np.subtract(scaled, offset, out=dst, casting="unsafe")
            del buf
        self._release(mm, ents[use[0]], ents[use[-1]], nchan * dt.itemsize, bounds, use)

    @staticmethod
    def _release(mm, first_ent, last_ent, row_bytes, bounds, use) -> None:
        """Drop the pages just read from this process's mapping (the page cache keeps them):
        file-backed pages would otherwise count in the resident set, which would then grow
        with the recording. A later read of the same bytes faults them back in."""
        if first_ent is None or last_ent is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        lo = (first_ent.pos // page) * page
        hi = last_ent.pos + 16 + int(bounds[use[-1] + 1] - bounds[use[-1]]) * row_bytes
        hi = min(len(mm), -(-hi // page) * page)
        if hi > lo:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def fif_block_reader(raw, picks, *, check_samples: int = 2048):
    """A :class:`FifBlockReader` for ``raw``, or None when it does not apply (then use
    ``raw.get_data``). Before it is used, the reader checks itself against ``get_data`` on
    the first samples and around every split-file boundary."""
    try:
        from mne.io.fiff.raw import Raw as FifRaw
    except ImportError:  # pragma: no cover
        return None
    # open_raw wraps the reader's class to guard its reads (readers/failures.py _guard_reads)
    if getattr(type(raw), "_brainomni_reader_class", type(raw)) is not FifRaw or raw.preload:
        return None
    if getattr(raw, "_comp", None) is not None or getattr(raw, "_projector", None) is not None:
        return None
    try:
        reader = FifBlockReader(raw, picks)
        n_times = int(raw.n_times)
        spans = [(0, min(n_times, check_samples))]
        for edge in reader.cumul[1:-1]:
            spans.append((max(0, int(edge) - check_samples // 2), min(n_times, int(edge) + 64)))
        for a, b in spans:
            ref = raw.get_data(picks=reader.picks, start=a, stop=b)
            offset = ref[:, :1]
            mine = np.empty(ref.shape, dtype=np.float32)
            reader.read_into(mine, a, b, offset)
            if not _close_to_mne(mine, ref, offset):
                raise ValueError(f"differs from get_data on samples [{a}, {b})")
    except Exception as exc:  # noqa: BLE001 - any surprise: MNE's own path
        log.debug("FIF block reader not used for %s: %s", raw.filenames[0], exc)
        return None
    return reader


def _close_to_mne(mine: np.ndarray, ref: np.ndarray, offset: np.ndarray) -> bool:
    """``mine`` equals ``(ref - offset)`` in float32 within 4 ulps of ``max(|ref|, |offset|)``
    (what float32 calibration of float32 samples can differ by; integer and double buffers
    match exactly)."""
    want = (ref - offset).astype(np.float32)
    tol = 4 * np.spacing(np.maximum(np.abs(ref), np.abs(offset)).astype(np.float32))
    return bool(np.all(np.abs(mine.astype(np.float64) - want) <= tol))
