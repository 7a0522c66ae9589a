"""A direct block reader for FIF raw data: the same numbers as MNE's ``get_data``, at half
the cost.

MNE reads a FIF data buffer as float64, transposed, then gathers the picked channels and
multiplies by the calibrations: three strided passes over every sample. Ingest reads the
whole recording once, and on one-hour MEG recordings those passes cost about as much as
the filtering itself. :class:`FifBlockReader` reads each buffer's bytes, swaps them to native
order in one contiguous pass, gathers the picked channels in cache-sized pieces and writes
``x * cal - offset`` straight into the caller's float32 block. The arithmetic is MNE's
(float64 calibration product, then the offset), so results are bit-identical to
``raw.get_data(picks) - offset`` cast to float32.

It covers plain (not preloaded) FIF raw files, split files included, without an applied
projector or compensation, whose buffers are float, int, short or double. Anything else, or
any surprise while it checks itself against ``get_data`` on the first samples, returns
``None`` from :func:`fif_block_reader` and the caller keeps MNE's path. It relies on fields
of MNE's FIF reader (``_raw_extras``: tag entries and buffer bounds; ``_read_picks``;
``_first_samps``; ``_raw_lengths``) and that self-check guards against their changing.
"""

from __future__ import annotations

import logging
import os

import numpy as np

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
        self._fids: dict[int, object] = {}

    def close(self) -> None:
        for f in self._fids.values():
            f.close()
        self._fids.clear()

    def _fid(self, fi: int):
        f = self._fids.get(fi)
        if f is None:
            f = self._fids[fi] = open(self.files[fi]["filename"], "rb")  # noqa: SIM115
        return f

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
        fid = self._fid(fi)
        use = np.flatnonzero((stop > bounds[:-1]) & (start < bounds[1:]))
        for ei in use:
            first, last = int(bounds[ei]), int(bounds[ei + 1])
            s0, s1 = max(start - first, 0), min(last, stop) - first
            o0 = first + s0 - start
            ent = ents[ei]
            if ent is None:  # a gap: MNE gives zeros
                np.subtract(0.0, offset, out=out[:, o0 : o0 + s1 - s0], casting="unsafe")
                continue
            fid.seek(ent.pos + 16, 0)
            nbytes = (last - first) * nchan * f["dtype"].itemsize
            raw = fid.read(nbytes)
            if len(raw) != nbytes:
                raise OSError(f"{f['filename']}: truncated data buffer at byte {ent.pos}")
            buf = np.frombuffer(raw, dtype=f["dtype"]).reshape(last - first, nchan)
            for p0 in range(s0, s1, _PIECE):
                p1 = min(s1, p0 + _PIECE)
                native = buf[p0:p1].astype(f["native"])  # one contiguous swap
                gathered = native.T[picks]  # (C, n)
                scaled = np.multiply(gathered, self.cals)  # float64, as MNE
                np.subtract(
                    scaled,
                    offset,
                    out=out[:, o0 + p0 - s0 : o0 + p1 - s0],
                    casting="unsafe",
                )


def fif_block_reader(raw, picks, *, check_samples: int = 2048):
    """A :class:`FifBlockReader` for ``raw``, or None when it does not apply (then use
    ``raw.get_data``). Before it is used, the reader checks itself against ``get_data`` on
    the first samples and around every split-file boundary."""
    try:
        from mne.io.fiff.raw import Raw as FifRaw
    except ImportError:  # pragma: no cover
        return None
    if type(raw) is not FifRaw or raw.preload:
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
            if not np.array_equal(mine, (ref - offset).astype(np.float32)):
                raise ValueError(f"differs from get_data on samples [{a}, {b})")
    except Exception as exc:  # noqa: BLE001 - any surprise: MNE's own path
        log.debug("FIF block reader not used for %s: %s", raw.filenames[0], exc)
        return None
    return reader
