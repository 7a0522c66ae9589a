"""Overlapping-block filtering and resampling in bounded memory.

Shapes: C = channels, N = FFT length at the input rate, M = at the output rate.

Each block reads ``hop_in`` new input samples (plus ``2 * margin_in`` of context kept from
the previous block), applies the :class:`~brainomni.signal.design.FilterPlan` response in
one rfft / irfft pair that also changes the rate, and emits ``hop_out`` output samples.
The interior of a circular convolution equals the linear one, so block boundaries leave no
trace; at the recording's two ends the signal is extended by odd reflection (MNE's
``reflect_limited`` padding), the same in block and whole-file runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.fft as sfft

from .design import FilterPlan

ReadFn = Callable[[int, int], np.ndarray]  # (start, stop) -> (C, stop - start) array

READ_PIECE_BYTES = 24 * 2**20  # float64 bytes per reader call (bounds the reader's temporaries)
FFT_CHUNK_BYTES = 16 * 2**20  # complex64 bytes per FFT channel chunk

_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Keep freed block-sized buffers on the heap instead of returning them to the OS.

    Every block allocates FFT temporaries of a few tens of MB; with glibc's defaults each one
    is a fresh ``mmap`` whose pages fault in again (a third of the chain's CPU time). Raising
    the mmap and trim thresholds (the usual allocator tuning for numeric code) lets them be
    reused. No effect on non-glibc platforms.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 512 * 2**20)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def _read_into(
    read: ReadFn, out: np.ndarray, start: int, stop: int, offset: np.ndarray | None = None
) -> None:
    """Read ``[start, stop)`` into ``out`` (float32) in pieces of bounded size, minus the
    per-channel ``offset`` (subtracted at the reader's precision, in the same pass).

    A reader with a ``read_into(out, start, stop, offset)`` method (e.g.
    :class:`~brainomni.readers.fifblocks.FifBlockReader`) fills ``out`` itself."""
    into = getattr(read, "read_into", None)
    if into is not None:
        into(out, start, stop, offset)
        return
    n_ch = out.shape[0]
    step = max(1, READ_PIECE_BYTES // (8 * max(1, n_ch)))
    for a in range(start, stop, step):
        b = min(stop, a + step)
        if offset is None:
            out[:, a - start : b - start] = read(a, b)
        else:
            np.subtract(read(a, b), offset, out=out[:, a - start : b - start], casting="unsafe")


def _odd_reflect_left(real: np.ndarray, n_pad: int) -> np.ndarray:
    """``n_pad`` samples before ``real[:, 0]``: 2*x0 - x[k], then constant where x runs out."""
    c = real.shape[0]
    pad = np.empty((c, n_pad), dtype=real.dtype)
    avail = min(n_pad, real.shape[1] - 1)
    x0 = real[:, :1]
    if avail > 0:
        # pad[-k] = 2*x0 - x[k] for k = 1..avail
        pad[:, n_pad - avail :] = 2 * x0 - real[:, avail:0:-1]
    fill = pad[:, n_pad - avail : n_pad - avail + 1] if avail > 0 else x0
    pad[:, : n_pad - avail] = fill
    return pad


def _odd_reflect_right(real: np.ndarray, n_pad: int) -> np.ndarray:
    return _odd_reflect_left(real[:, ::-1], n_pad)[:, ::-1]


class BlockFilter:
    """Streams a (C, n_times) source through a :class:`FilterPlan`.

    ``on_input(x_center)`` receives, once per block, the raw input samples the block is
    responsible for (the blocks' centres tile ``[0, n_times)`` exactly); ``on_spectrum(
    chan_slice, power)`` receives the block's input power spectrum per channel chunk.
    """

    def __init__(
        self,
        plan: FilterPlan,
        n_channels: int,
        n_times: int,
        *,
        on_input: Callable[[np.ndarray], None] | None = None,
        on_spectrum: Callable[[slice, np.ndarray], None] | None = None,
        offset: np.ndarray | None = None,
        reuse_output: bool = False,
    ) -> None:
        if n_times <= 0:
            raise ValueError("n_times must be positive")
        self.plan = plan
        self.n_channels = n_channels
        self.n_times = n_times
        self.n_out = plan.n_out(n_times)
        self.on_input = on_input
        self.on_spectrum = on_spectrum
        self.offset = None if offset is None else np.asarray(offset, dtype=np.float64)[:, None]
        # the yielded block is overwritten by the next one (callers that consume each block
        # before asking for the next): saves a fresh, page-faulting allocation per block
        self.reuse_output = reuse_output

    @property
    def n_blocks(self) -> int:
        return -(-self.n_out // self.plan.hop_out)

    def run(self, read: ReadFn) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(out_start, y)`` with ``y`` float32 of shape (C, n) covering the output.

        Block-sized arrays are allocated once (two input buffers used in turn, so the overlap
        with the previous block can be copied across): arrays this large bypass the heap,
        and fresh ones cost a page fault per 4 KB on every block."""
        p = self.plan
        n, c = self.n_times, self.n_channels
        m, hop, nfft = p.margin_in, p.hop_in, p.nfft_in
        H = p.response()
        n_bins_out = H.size
        Hs = H * np.float32(p.nfft_out / p.nfft_in)  # response with the rate's scale
        chunk = max(1, FFT_CHUNK_BYTES // (8 * (nfft // 2 + 1)))
        buf: np.ndarray | None = None  # padded block, only at the recording's two ends
        have_start, have_stop = 0, 0  # real samples [have_start, have_stop) held
        held = np.empty((c, 0), dtype=np.float32)
        width = min(nfft, n)
        pool = [
            np.empty((c, width), dtype=np.float32) for _ in range(2 if self.n_blocks > 1 else 1)
        ]
        y_pool = np.empty((c, p.hop_out), dtype=np.float32) if self.reuse_output else None
        for b in range(self.n_blocks):
            s, e = b * hop - m, b * hop - m + nfft  # block span in input coordinates
            rs, re = max(s, 0), min(e, n)
            # Real samples: reuse the overlap with the previous block, read the rest.
            keep_from = max(rs, have_start)
            real = pool[b % len(pool)][:, : re - rs]
            if have_stop > keep_from:
                k0 = keep_from - have_start
                k1 = have_stop - have_start
                real[:, keep_from - rs : have_stop - rs] = held[:, k0:k1]
                read_from = have_stop
            else:
                read_from = rs
            if re > read_from:
                _read_into(read, real[:, read_from - rs :], read_from, re, self.offset)
            held, have_start, have_stop = real, rs, re
            # Assemble the block with reflected padding at the recording's ends.
            left, right = rs - s, e - re
            if left or right:
                if buf is None:
                    buf = np.empty((c, nfft), dtype=np.float32)
                buf[:, left : left + (re - rs)] = real
                if left:
                    buf[:, :left] = _odd_reflect_left(real, left)
                if right:
                    buf[:, nfft - right :] = _odd_reflect_right(real, right)
                block = buf
            else:
                block = real  # interior block: the real samples are the block
            if self.on_input is not None:
                cs, ce = b * hop, min((b + 1) * hop, n)
                if ce > cs:
                    self.on_input(real[:, cs - rs : ce - rs])
            out_start = b * p.hop_out
            n_keep = min(p.hop_out, self.n_out - out_start)
            y = (
                y_pool[:, :n_keep]
                if y_pool is not None
                else np.empty((c, n_keep), dtype=np.float32)
            )
            for c0 in range(0, c, chunk):
                sl = slice(c0, min(c, c0 + chunk))
                X = sfft.rfft(block[sl], axis=-1, workers=1)
                if self.on_spectrum is not None:
                    self.on_spectrum(sl, X)
                k = min(n_bins_out, X.shape[1])
                if k == n_bins_out:  # down-sampling or same rate: irfft reads the low bins
                    X[:, :k] *= Hs
                    Y = X
                else:  # up-sampling: zero above the input's Nyquist
                    Y = np.zeros((X.shape[0], n_bins_out), dtype=np.complex64)
                    np.multiply(X, Hs[:k], out=Y[:, :k])
                del X
                yo = sfft.irfft(Y, n=p.nfft_out, axis=-1, workers=1, overwrite_x=True)
                y[sl] = yo[:, p.margin_out : p.margin_out + n_keep]
            yield out_start, y


class _Fifo:
    """Serves monotonic ``read(a, b)`` calls from a generator of consecutive blocks."""

    def __init__(self, blocks: Iterator[tuple[int, np.ndarray]]) -> None:
        self._blocks = blocks
        self._chunks: list[tuple[int, np.ndarray]] = []
        self._end = 0

    def read(self, a: int, b: int) -> np.ndarray:
        while self._end < b:
            start, y = next(self._blocks)
            self._chunks.append((start, y))
            self._end = start + y.shape[1]
        self._chunks = [(s, y) for s, y in self._chunks if s + y.shape[1] > a]
        parts = []
        for s, y in self._chunks:
            lo, hi = max(a, s), min(b, s + y.shape[1])
            if hi > lo:
                parts.append(y[:, lo - s : hi - s])
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def run_chain(
    plans: tuple[FilterPlan, ...],
    read: ReadFn,
    n_channels: int,
    n_times: int,
    *,
    on_input: Callable[[np.ndarray], None] | None = None,
    on_spectrum: Callable[[slice, np.ndarray], None] | None = None,
    offset: np.ndarray | None = None,
    reuse_output: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Run the stages of :func:`~brainomni.signal.design.plan_chain` as one stream.

    The hooks see the first stage's input (the raw recording). Yields ``(out_start, y)``;
    with ``reuse_output`` each ``y`` is valid only until the next one is asked for.
    """
    _tune_malloc()
    stream: Iterator[tuple[int, np.ndarray]] | None = None
    for i, plan in enumerate(plans):
        bf = BlockFilter(
            plan,
            n_channels,
            n_times,
            on_input=on_input if i == 0 else None,
            on_spectrum=on_spectrum if i == 0 else None,
            offset=offset if i == 0 else None,
            reuse_output=reuse_output and i + 1 == len(plans),
        )
        stream = bf.run(read)
        if i + 1 < len(plans):
            read = _Fifo(stream).read
            n_times = bf.n_out
    assert stream is not None
    return stream


def filter_resample(x: np.ndarray, plans: tuple[FilterPlan, ...]) -> np.ndarray:
    """Whole-array convenience: run the chain over ``x`` (C, T) -> (C, T_out) float32."""
    x = np.atleast_2d(np.asarray(x))
    blocks = run_chain(plans, lambda a, b: x[:, a:b], x.shape[0], x.shape[1])
    return np.concatenate([y for _, y in blocks], axis=1)
