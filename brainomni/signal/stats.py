"""Streaming per-channel statistics for quality control and bad-channel rules.

Fed block by block (bounded memory); all accumulators are O(channels x seconds) at most.

- ``update_input(x)``: raw input samples (C, n) in their native units. Per 1-s window:
  peak-to-peak (flat detection), max and min (clipping: a clipped channel sits at the same
  extreme value in many windows, a healthy one reaches its extreme once).
- ``update_spectrum(sl, X)``: the raw input's rfft over one block (line-noise ratio).
- ``update_output(y)``: the filtered 256-Hz signal, two Welch PSDs (periodic Hamming
  window, no overlap, constant detrend, mean over segments, one-sided density):

  - the **rule PSD**, for the spectral bad-channel rule, on the ``rule_rows`` channels
    (EEG) only: exactly what the official ``raw.compute_psd()`` computes at the output
    rate, i.e. MNE's Raw default ``n_fft = min(n_times, 2048)`` samples per segment, every
    whole segment from the first sample, the trailing partial one dropped;
  - the **QC PSD** (``psd()``), every channel, 1-s segments, over every 4th segment (an
    even 25 % subsample: 900 segments per hour): the per-type summary of the QC record.

  Rule segments that overlap a ``bad_spans`` interval (the file's BAD annotations) are
  left out, as ``compute_psd``'s ``reject_by_annotation`` leaves those samples out.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

PSD_EVERY = 4  # the QC Welch uses every 4th 1-s segment of the output


def _hamming(n: int) -> np.ndarray:
    """Periodic Hamming window, as scipy's ``get_window`` (and so MNE's Welch) builds it."""
    k = np.arange(n)
    return (0.54 - 0.46 * np.cos(2 * np.pi * k / n)).astype(np.float32)


def _density(total: np.ndarray, count: int, n: int, sfreq: float, win: np.ndarray) -> np.ndarray:
    """Mean of ``count`` |rfft|^2 sums -> one-sided PSD density (scipy's scaling)."""
    psd = total / count / (sfreq * float((win.astype(np.float64) ** 2).sum()))
    if n % 2:  # no Nyquist bin
        psd[:, 1:] *= 2
    else:
        psd[:, 1:-1] *= 2
    return psd


def _frames(carry: np.ndarray, x: np.ndarray, L: int, add) -> np.ndarray:
    """Feed ``carry`` + ``x`` (consecutive samples) to ``add`` as whole frames (C, k, L),
    without copying ``x`` (the frames are a strided view); returns the new carry."""
    if carry.shape[1]:  # complete the pending frame first
        take = min(L - carry.shape[1], x.shape[1])
        head = np.concatenate([carry, x[:, :take]], axis=1)
        x = x[:, take:]
        if head.shape[1] < L:
            return head
        add(head[:, None, :])
    k = x.shape[1] // L
    if k:
        add(x[:, : k * L].reshape(x.shape[0], k, L))
    return np.array(x[:, k * L :], dtype=np.float32)


class ChannelStats:
    """Accumulates the statistics of one recording."""

    def __init__(
        self,
        n_channels: int,
        sfreq_in: float,
        *,
        sfreq_out: float = 256.0,
        line_freqs: tuple[float, ...] = (),
        nfft_in: int | None = None,
        rule_rows: np.ndarray | list[int] | None = None,
        rule_n_fft: int = 2048,
        n_out_total: int | None = None,
        bad_spans: list[tuple[int, int]] | None = None,
    ) -> None:
        """``rule_rows``: channels of the rule PSD; ``rule_n_fft``: its segment length,
        capped at ``n_out_total`` (the output length, when known) as MNE caps it;
        ``bad_spans``: [start, stop) output samples whose segments the rule PSD skips."""
        self.n_channels = n_channels
        self.sfreq_in = float(sfreq_in)
        self.sfreq_out = float(sfreq_out)
        self.win_in = max(1, int(round(sfreq_in)))  # 1-s windows on the input
        self.offset: np.ndarray | None = None  # per-channel value subtracted from the input
        self._carry_in = np.empty((n_channels, 0), dtype=np.float32)
        self._ptp: list[np.ndarray] = []
        self._max: list[np.ndarray] = []
        self._min: list[np.ndarray] = []
        self._nmax: list[np.ndarray] = []
        self._nmin: list[np.ndarray] = []
        self.n_in = 0
        # QC Welch on the output
        self.seg_out = int(round(sfreq_out))
        self._win = _hamming(self.seg_out)
        # rule Welch on the output (official segments)
        self.rule_rows = np.asarray([] if rule_rows is None else rule_rows, dtype=int)
        r = self.rule_rows
        contiguous = r.size > 0 and np.array_equal(r, np.arange(r[0], r[0] + r.size))
        self._rule_sel = slice(int(r[0]), int(r[0]) + r.size) if contiguous else r  # a view
        n_fft = int(rule_n_fft)
        if n_out_total is not None:
            n_fft = min(n_fft, int(n_out_total))
        self.rule_seg = max(1, n_fft)
        self._rule_win = _hamming(self.rule_seg)
        self._rule_carry = np.empty((self.rule_rows.size, 0), dtype=np.float32)
        self.rule_sum = np.zeros((self.rule_rows.size, self.rule_seg // 2 + 1))
        self.rule_count = 0
        self._rule_next = 0  # output sample where the next rule segment starts
        self.bad_spans = sorted((int(a), int(b)) for a, b in (bad_spans or ()) if b > a)
        self._carry_out = np.empty((n_channels, 0), dtype=np.float32)
        self.psd_sum = np.zeros((n_channels, self.seg_out // 2 + 1))
        self.psd_count = 0
        self._seg_phase = 0
        self.n_out = 0
        # Line noise from the input spectrum
        self.line_freqs = tuple(f for f in line_freqs if f + 6 < self.sfreq_in / 2)
        self.line_power = np.zeros((n_channels, len(self.line_freqs)))
        self.neigh_power = np.zeros((n_channels, len(self.line_freqs)))
        self._line_bins: dict[int, list[tuple[slice, np.ndarray]]] = {}

    # -- input -------------------------------------------------------------------------
    def update_input(self, x: np.ndarray) -> None:
        """Raw samples (C, n), consecutive across calls."""
        self.n_in += x.shape[1]
        self._carry_in = _frames(self._carry_in, x, self.win_in, self._add_windows)

    def _add_windows(self, w: np.ndarray) -> None:
        """``w`` (C, W, L): per-window extremes, and how many samples sit at them.

        Samples at the extreme are counted only in the windows that reach the block's own
        extreme: a window at the recording's extreme necessarily reaches its block's, so
        the clipping rule loses nothing, and the count costs a few windows per channel.
        """
        mx, mn = w.max(axis=2), w.min(axis=2)
        self._max.append(mx)
        self._min.append(mn)
        self._ptp.append(mx - mn)
        for ext, store in ((mx, self._nmax), (mn, self._nmin)):
            counts = np.zeros(ext.shape, dtype=np.int32)
            ci, wi = (
                np.nonzero(ext == ext.max(axis=1, keepdims=True))
                if ext is mx
                else np.nonzero(ext == ext.min(axis=1, keepdims=True))
            )
            if ci.size:
                counts[ci, wi] = (w[ci, wi, :] == ext[ci, wi][:, None]).sum(axis=1)
            store.append(counts)

    def _finish_input(self) -> None:
        # A trailing partial window counts when it holds at least half a window.
        if self._carry_in.shape[1] * 2 >= self.win_in:
            self._add_windows(self._carry_in[:, None, :])
        self._carry_in = self._carry_in[:, :0]

    def windows(self) -> dict[str, np.ndarray]:
        """Per 1-s input window, each (C, n_windows): ``ptp``, ``max``, ``min``, and
        ``n_at_max`` / ``n_at_min`` (samples equal to the window's max / min)."""
        self._finish_input()
        keys = ("ptp", "max", "min", "n_at_max", "n_at_min")
        lists = (self._ptp, self._max, self._min, self._nmax, self._nmin)
        if not self._ptp:
            return {k: np.zeros((self.n_channels, 0)) for k in keys}
        out = {k: np.concatenate(v, 1) for k, v in zip(keys, lists, strict=True)}
        if self.offset is not None:  # back to the recording's own values
            out["max"] = out["max"] + self.offset[:, None]
            out["min"] = out["min"] + self.offset[:, None]
        return out

    # -- input spectrum ----------------------------------------------------------------
    def update_spectrum(self, sl: slice, X: np.ndarray) -> None:
        """Complex rfft (C_chunk, n_bins) of one raw block for channels ``sl``."""
        if not self.line_freqs:
            return
        nfft = 2 * (X.shape[1] - 1)
        bins = self._line_bins.get(nfft)
        if bins is None:
            df = self.sfreq_in / nfft
            bins = []
            for f0 in self.line_freqs:
                k = np.arange(X.shape[1]) * df
                line = np.abs(k - f0) <= 0.5
                neigh = (np.abs(k - f0) >= 1.5) & (np.abs(k - f0) <= 5.0)
                idx_l, idx_n = np.flatnonzero(line), np.flatnonzero(neigh)
                bins.append((slice(idx_l[0], idx_l[-1] + 1), idx_n))
            self._line_bins[nfft] = bins
        for j, (lsl, nidx) in enumerate(bins):
            pl = X[:, lsl]
            pn = X[:, nidx]
            self.line_power[sl, j] += (pl.real**2 + pl.imag**2).sum(axis=1)
            # neighbour power scaled to the line band's number of bins
            width = lsl.stop - lsl.start
            self.neigh_power[sl, j] += (pn.real**2 + pn.imag**2).mean(axis=1) * width

    def line_ratio(self) -> np.ndarray:
        """(C, n_line_freqs) power ratio of the line band to its neighbourhood (1 = none).

        A floor of 1e-6 x the median neighbourhood power keeps dead channels (no power
        anywhere) at a ratio near 1 instead of 0/0.
        """
        if self.line_power.size == 0:
            return self.line_power
        floor = 1e-6 * np.median(self.neigh_power, axis=0, keepdims=True) + 1e-300
        return (self.line_power + floor) / (self.neigh_power + floor)

    # -- output ------------------------------------------------------------------------
    def update_output(self, y: np.ndarray) -> None:
        """Filtered output (C, n) at ``sfreq_out``, consecutive across calls."""
        self.n_out += y.shape[1]
        self._carry_out = _frames(self._carry_out, y, self.seg_out, self._add_segments)
        if self.rule_rows.size:
            self._rule_carry = _frames(
                self._rule_carry, y[self._rule_sel], self.rule_seg, self._add_rule_segments
            )

    def _add_rule_segments(self, segs: np.ndarray) -> None:
        """Consecutive rule segments (R, n_seg, L), every one of them (but those that
        overlap a bad span)."""
        L, n_seg = self.rule_seg, segs.shape[1]
        starts = self._rule_next + L * np.arange(n_seg)
        self._rule_next += L * n_seg
        if self.bad_spans:
            ok = np.ones(n_seg, dtype=bool)
            for a, b in self.bad_spans:
                ok &= (starts + L <= a) | (starts >= b)
            if not ok.all():
                segs = segs[:, ok]
        if segs.shape[1] == 0:
            return
        segs = segs - segs.mean(axis=2, keepdims=True)  # detrend="constant"
        segs *= self._rule_win
        spec = sfft.rfft(segs, axis=2, workers=1)
        self.rule_sum += (spec.real**2 + spec.imag**2).sum(axis=1, dtype=np.float64)
        self.rule_count += segs.shape[1]

    def rule_psd(self) -> tuple[np.ndarray, np.ndarray]:
        """(freqs, psd (len(rule_rows), F)): the rule's Welch estimate; 0 when too short."""
        freqs = np.fft.rfftfreq(self.rule_seg, 1.0 / self.sfreq_out)
        if self.rule_count == 0:
            return freqs, np.zeros_like(self.rule_sum)
        return freqs, _density(
            self.rule_sum, self.rule_count, self.rule_seg, self.sfreq_out, self._rule_win
        )

    def _add_segments(self, segs: np.ndarray) -> None:
        """Consecutive 1-s segments (C, n_seg, L): one in PSD_EVERY goes into the Welch sum
        (an even subsample, plenty for a per-channel PSD)."""
        n_seg = segs.shape[1]
        segs = segs[:, self._seg_phase :: PSD_EVERY]
        self._seg_phase = (self._seg_phase - n_seg) % PSD_EVERY
        if segs.shape[1] == 0:
            return
        segs = segs - segs.mean(axis=2, keepdims=True)  # detrend="constant"
        segs *= self._win
        spec = sfft.rfft(segs, axis=2, workers=1)
        self.psd_sum += (spec.real**2 + spec.imag**2).sum(axis=1, dtype=np.float64)
        self.psd_count += segs.shape[1]

    def psd(self) -> tuple[np.ndarray, np.ndarray]:
        """(freqs, psd (C, F)) QC Welch estimate of the output; psd is 0 when too short."""
        freqs = np.fft.rfftfreq(self.seg_out, 1.0 / self.sfreq_out)
        if self.psd_count == 0:
            return freqs, np.zeros_like(self.psd_sum)
        return freqs, _density(
            self.psd_sum, self.psd_count, self.seg_out, self.sfreq_out, self._win
        )
