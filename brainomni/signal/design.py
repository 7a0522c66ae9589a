"""Filter design for the cleaning chain: one zero-phase filter, one rational ratio.

The official chain is notch(50, 60) -> resample to 256 Hz -> band-pass 0.1-96 Hz, each an
MNE FIR filter. All three are linear and (below the output Nyquist) commute, so we apply
them as a single zero-phase filter whose frequency response is the product of

* MNE's own band-pass kernel designed at the output rate (``create_filter(256, 0.1, 96)``,
  the exact kernel the official code applies after resampling),
* MNE's own notch kernel(s) at the output rate (as ``notch_filter`` designs them), at the
  line frequency and its harmonics below the band edge,
* a raised-cosine taper that reaches zero at the lower of the two Nyquist frequencies
  (the band-pass already attenuates there by >= 50 dB; the taper makes the response
  exactly zero where the FFT resampler truncates the spectrum, so block edges leave no
  trace),

and with the DC bin forced to zero (MNE's high-pass leaks |H(0)| of a few 1e-3; a recording's
DC offset is removed exactly instead).

Resampling is done in the same FFT: the input rate is expressed as a rational ratio
``out/in = P/Q`` (exact for every common rate; for non-rational header rates such as
Neuromag's 300.307 Hz, the closest small ratio within ``max_rate_error``, recorded in the
provenance), so that blocks of ``Q * n`` input samples map to exactly ``P * n`` outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import CleanConfig


@dataclass(frozen=True)
class Ratio:
    """``sfreq_out / sfreq_in ~= up / down`` in lowest terms."""

    up: int
    down: int
    rate_error: float  # relative error of the approximation (0 when exact)

    @property
    def value(self) -> float:
        return self.up / self.down


def rational_ratio(sfreq_in: float, sfreq_out: float, *, max_rate_error: float = 1e-6) -> Ratio:
    """The smallest-denominator ratio ``P/Q ~= sfreq_out/sfreq_in`` within ``max_rate_error``.

    Raises ``ValueError`` for non-positive rates.
    """
    if sfreq_in <= 0 or sfreq_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {sfreq_in} and {sfreq_out}")
    exact = Fraction(sfreq_out) / Fraction(sfreq_in)
    target = float(exact)
    for max_den in (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000):
        r = exact.limit_denominator(max_den)
        err = abs(float(r) - target) / target
        if err <= max_rate_error:
            return Ratio(r.numerator, r.denominator, err)
    r = exact.limit_denominator(10**7)
    return Ratio(r.numerator, r.denominator, abs(float(r) - target) / target)


def _impulse_response(filt: np.ndarray | None) -> np.ndarray:
    return np.array([1.0]) if filt is None else np.asarray(filt, dtype=np.float64)


KERNEL_DESIGN = 1  # bump when _design_kernel changes: keys of cached kernels change with it


def _kernel_cache_dir() -> Path:
    d = os.environ.get("BRAINOMNI_CACHE_DIR")
    base = Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base if d else base / "brainomni") / "kernels"


@lru_cache(maxsize=64)
def _kernel(
    sfreq: float, l_freq: float, h_freq: float, notch: tuple[float, ...], notch_tb: float
) -> np.ndarray:
    """Combined zero-phase FIR kernel (odd length, centred) at the output rate.

    Designing it imports scipy.signal and scipy.stats through MNE (about 0.4 CPU-s, a
    twentieth of cleaning a one-hour recording), so designed kernels are kept on disk
    (``$BRAINOMNI_CACHE_DIR`` or ``~/.cache/brainomni/kernels``, plain ``.npy``, keyed by
    the parameters, MNE's version and ``KERNEL_DESIGN``) for the next process, loaded
    without pickle. An unusable cache is ignored.
    """
    import mne

    key = hashlib.sha256(
        json.dumps(
            [KERNEL_DESIGN, sfreq, l_freq, h_freq, list(notch), notch_tb, mne.__version__]
        ).encode()
    ).hexdigest()[:32]
    path = _kernel_cache_dir() / f"{key}.npy"
    if path.is_file():
        try:
            h = np.load(path, allow_pickle=False)
            if h.ndim == 1 and h.size % 2 == 1 and np.all(np.isfinite(h)):
                h.setflags(write=False)
                return h
        except (OSError, ValueError):
            pass
    h = _design_kernel(sfreq, l_freq, h_freq, notch, notch_tb)
    try:  # atomic: concurrent workers may write the same key
        from ..io.commit import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, h, allow_pickle=False)
        atomic_write_bytes(str(path), buf.getvalue())
    except OSError:  # read-only home, full disk: design again next time
        pass
    return h


def _design_kernel(
    sfreq: float, l_freq: float, h_freq: float, notch: tuple[float, ...], notch_tb: float
) -> np.ndarray:
    """MNE's band-pass kernel convolved with MNE's notch kernel (see :func:`_kernel`)."""
    import mne

    bp = mne.filter.create_filter(
        None, sfreq, l_freq, h_freq, fir_design="firwin", phase="zero", verbose="error"
    )
    h = _impulse_response(bp)
    if notch:
        freqs = np.asarray(notch, dtype=float)
        widths = freqs / 200.0  # MNE notch_filter default
        tb_2 = notch_tb / 2.0
        lows = freqs - widths / 2.0 - tb_2
        highs = freqs + widths / 2.0 + tb_2
        nk = mne.filter.create_filter(
            None,
            sfreq,
            highs,
            lows,
            l_trans_bandwidth=tb_2,
            h_trans_bandwidth=tb_2,
            fir_design="firwin",
            phase="zero",
            verbose="error",
        )
        h = np.convolve(h, _impulse_response(nk))
    if h.size % 2 == 0:  # keep a centred, odd-length kernel
        h = np.concatenate([h, [0.0]])
    h.setflags(write=False)
    return h


@dataclass(frozen=True)
class FilterPlan:
    """One zero-phase FFT filtering stage (optionally changing the rate) and its blocks.

    The response is ``DTFT(kernel) * taper``, with a raised-cosine taper falling to
    zero at ``nyq`` (the lower of the two Nyquist frequencies), and the DC bin zeroed when
    ``zero_dc``. ``kernel`` (at the output rate, centred) may be None: taper only.
    ``taper_hz`` is the width of the raised-cosine taper below the Nyquist frequency.
    """

    sfreq_in: float
    sfreq_out: float
    ratio: Ratio
    kernel: np.ndarray | None
    zero_dc: bool
    margin_in: int  # input samples of context on each side of a block (multiple of Q)
    hop_in: int  # input samples advanced per block (multiple of Q)
    nfft_in: int  # FFT length at the input rate = hop_in + 2 * margin_in
    notch_freqs: tuple[float, ...] = ()
    taper_hz: float = 8.0

    @property
    def hop_out(self) -> int:
        return self.hop_in * self.ratio.up // self.ratio.down

    @property
    def margin_out(self) -> int:
        return self.margin_in * self.ratio.up // self.ratio.down

    @property
    def nfft_out(self) -> int:
        return self.nfft_in * self.ratio.up // self.ratio.down

    def n_out(self, n_in: int) -> int:
        """Output samples for ``n_in`` input samples (rounded like MNE's resample)."""
        return int(round(n_in * self.ratio.up / self.ratio.down))

    def response(self) -> np.ndarray:
        """Real frequency response on the output-rate rfft bins of one block (cached)."""
        kb = b"" if self.kernel is None else self.kernel.tobytes()
        return _response(
            kb, self.nfft_out, self.sfreq_out, self.sfreq_in, self.zero_dc, self.taper_hz
        )


@lru_cache(maxsize=32)
def _response(
    kernel_bytes: bytes,
    nfft_out: int,
    sfreq_out: float,
    sfreq_in: float,
    zero_dc: bool,
    taper_hz: float,
) -> np.ndarray:
    n_bins = nfft_out // 2 + 1
    if kernel_bytes:
        kernel = np.frombuffer(kernel_bytes, dtype=np.float64)
        half = kernel.size // 2
        if nfft_out < kernel.size:
            raise ValueError("block too short for the filter kernel")
        wrapped = np.zeros(nfft_out)
        wrapped[: half + 1] = kernel[half:]
        wrapped[nfft_out - half :] = kernel[:half]
        H = np.fft.rfft(wrapped).real  # zero-phase: the imaginary part is rounding noise
    else:
        H = np.ones(n_bins)
    freqs = np.arange(n_bins) * sfreq_out / nfft_out
    nyq = min(sfreq_in, sfreq_out) / 2.0
    lo = nyq - min(taper_hz, 0.25 * nyq)
    band = (freqs > lo) & (freqs < nyq)
    H[band] *= 0.5 * (1 + np.cos(np.pi * (freqs[band] - lo) / (nyq - lo)))
    H[freqs >= nyq] = 0.0
    if zero_dc:
        H[0] = 0.0
    H = H.astype(np.float32)
    H.setflags(write=False)
    return H


def _fast_multiple(q: int, at_least: int) -> int:
    """Smallest ``q * n >= at_least`` with ``n`` 5-smooth (fast FFT sizes)."""
    from scipy.fft import next_fast_len

    return q * next_fast_len(max(1, math.ceil(at_least / q)), real=True)


def _blocks(
    q: int, margin_s: float, sfreq_in: float, n_channels: int, block_s: float, block_bytes: int
) -> tuple[int, int, int]:
    """(margin_in, hop_in, nfft_in) for a stage: margins and hop multiples of ``q``."""
    margin_in = q * math.ceil(margin_s * sfreq_in / q)
    budget = max(block_bytes // (4 * max(1, n_channels)), 4 * margin_in + 2 * q)
    want = int(block_s * sfreq_in) + 2 * margin_in
    nfft_in = _fast_multiple(q, min(want, budget))
    if nfft_in - 2 * margin_in < q:
        nfft_in = _fast_multiple(q, 2 * margin_in + q)
    return margin_in, nfft_in - 2 * margin_in, nfft_in


# Tapers: the response falls to zero over the last ``*_TAPER_HZ`` below the Nyquist frequency
# where the FFT resampler truncates. A raised cosine of width W decays like (1/(W t))^3: the
# resampling stage (W = 8 Hz, 2 s of context) leaves < 3e-4 of the content above 120 Hz,
# which the band-pass then removes; the band-pass stage (W = 2 Hz, >= 17 s of context)
# leaves < 3e-5, close to MNE's brick-wall resampler for inputs below 256 Hz.
RESAMPLE_TAPER_HZ = 8.0
BANDPASS_TAPER_HZ = 2.0
RESAMPLE_MARGIN_S = 2.0
RESAMPLE_BLOCK_S = 16.0  # short FFTs stay in cache


def plan_resample(sfreq_in: float, n_channels: int, config: CleanConfig) -> FilterPlan:
    """Stage A: change the rate to ``config.sfreq`` (anti-alias taper only)."""
    ratio = rational_ratio(sfreq_in, config.sfreq, max_rate_error=config.max_rate_error)
    margin_in, hop_in, nfft_in = _blocks(
        ratio.down, RESAMPLE_MARGIN_S, sfreq_in, n_channels, RESAMPLE_BLOCK_S, config.block_bytes
    )
    return FilterPlan(
        float(sfreq_in),
        float(config.sfreq),
        ratio,
        None,
        False,
        margin_in,
        hop_in,
        nfft_in,
        taper_hz=RESAMPLE_TAPER_HZ,
    )


def plan_bandpass(
    n_channels: int,
    config: CleanConfig,
    *,
    sfreq_in: float | None = None,
    line_freq: float | None = None,
    extra_notch: tuple[float, ...] = (),
) -> FilterPlan:
    """Stage B: notch + band-pass with MNE's kernels; changes the rate too when ``sfreq_in``
    differs from ``config.sfreq`` (single-stage chain)."""
    sfreq_in = float(config.sfreq if sfreq_in is None else sfreq_in)
    ratio = rational_ratio(sfreq_in, config.sfreq, max_rate_error=config.max_rate_error)
    nyq = min(sfreq_in, config.sfreq) / 2
    notch = tuple(
        sorted(
            set(config.notch_freqs(line_freq, sfreq_in))
            | {round(f, 6) for f in extra_notch if f < nyq - 1}
        )
    )
    kernel = _kernel(
        float(config.sfreq), config.l_freq, config.h_freq, notch, config.notch_trans_bandwidth
    )
    margin_s = (kernel.size // 2) / config.sfreq + 1.0
    margin_in, hop_in, nfft_in = _blocks(
        ratio.down, margin_s, sfreq_in, n_channels, config.block_seconds, config.block_bytes
    )
    return FilterPlan(
        sfreq_in,
        float(config.sfreq),
        ratio,
        kernel,
        True,
        margin_in,
        hop_in,
        nfft_in,
        notch,
        taper_hz=BANDPASS_TAPER_HZ,
    )


def plan_chain(
    sfreq_in: float,
    n_channels: int,
    config: CleanConfig,
    *,
    line_freq: float | None = None,
    extra_notch: tuple[float, ...] = (),
) -> tuple[FilterPlan, ...]:
    """The stages for one recording.

    Heavily oversampled inputs (more than 1.5x the output rate) are first brought to the
    output rate with short, cache-friendly FFTs, then band-passed at the output rate (about
    twice as fast for 1-2 kHz MEG); otherwise a single stage does both.
    """
    if sfreq_in > 1.5 * config.sfreq:
        return (
            plan_resample(sfreq_in, n_channels, config),
            plan_bandpass(n_channels, config, line_freq=line_freq, extra_notch=extra_notch),
        )
    return (
        plan_bandpass(
            n_channels, config, sfreq_in=sfreq_in, line_freq=line_freq, extra_notch=extra_notch
        ),
    )
