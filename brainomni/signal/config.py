"""The cleaning configuration: frozen, versioned, hashed.

Every output store records the config and its hash; a store is redone when the hash
changes. The hash covers every field (and the schema version), so changing any parameter
changes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

CONFIG_SCHEMA = 1


@dataclass(frozen=True)
class CleanConfig:
    """Parameters of the per-recording cleaning chain (spec §2 with the corrections of §9).

    Frequencies in Hz, durations in seconds.
    """

    sfreq: float = 256.0  # output sampling rate
    l_freq: float = 0.1  # band-pass lower edge
    h_freq: float = 96.0  # band-pass upper edge
    line_freq: float | None = None  # forced line frequency; None = from BIDS/file, else both
    fallback_line_freqs: tuple[float, ...] = (50.0, 60.0)  # notched when the line is unknown
    notch_harmonics: bool = True  # also notch harmonics below h_freq
    notch_trans_bandwidth: float = 1.0  # MNE notch_filter default
    chpi: bool = True  # remove cHPI lines when active HPI coils are present
    # Rational approximation of the resampling ratio: allowed relative rate error
    # (1e-6 keeps the drift below one 256-Hz sample per hour).
    max_rate_error: float = 1e-6
    # Bad channels
    detect_bads: bool = True
    # Spectral-outlier rule (EEG). The defaults are the official rule: the Welch PSD of
    # ``raw.compute_psd()`` (MNE's Raw defaults: n_fft = n_per_seg = 2048 output samples,
    # Hamming, no overlap, mean) over every bin (fmin 0, fmax None = Nyquist), natural
    # log of psd + 1e-16 (V^2/Hz), channels marked bad beforehand left out. n_fft 256,
    # fmin 1, fmax 90 give this project's former rule (1-s segments over 1-90 Hz).
    psd_n_fft: int = 2048  # segment length in output samples (capped at the length)
    psd_fmin: float = 0.0  # band of the rule, Hz
    psd_fmax: float | None = None  # None: up to Nyquist
    psd_floor: float = 1e-16  # added to the PSD before the log (the official's 1e-16)
    psd_iqr_factor: float = 10.0  # official rule: outside [Q1 - k IQR, Q3 + k IQR]
    psd_min_channels: int = 8  # the spectral rule needs enough channels to be meaningful
    flat_window: float = 1.0  # window for flat detection
    flat_fraction: float = 0.2  # bad when flat in more than this fraction of windows
    flat_rel: float = 1e-3  # flat when window std < flat_rel * median std of its type ...
    flat_abs: tuple[tuple[str, float], ...] = (("V", 1e-8), ("T", 1e-16), ("T/m", 1e-14))
    clip_fraction: float = 0.01  # bad when more of its 1-s windows sit at a clipped extreme
    clip_min_windows: int = 5  # ... and at least this many windows
    clip_run: int = 3  # samples at the extreme within a window to count as clipping
    line_noise_z: float = 10.0  # robust z of log line-noise ratio above which a channel is bad
    line_noise_min_ratio: float = 10.0  # ... and at least this power ratio to neighbours
    max_bad_fraction: float = 0.5  # skip when more than this fraction of a type is bad
    interpolate_origin: tuple[float, float, float] = (0.0, 0.0, 0.04)  # metres, as the code
    interpolate_mode: str = "accurate"
    eeg_reference: str = "average"  # "average" or "none"
    # Minimal usable recording
    min_duration: float = 0.25  # shorter recordings are skipped (one latent step)
    # Block processing
    block_seconds: float = 120.0  # output samples produced per block (memory bound)
    block_bytes: int = 256 * 2**20  # cap on one block's float32 input buffer
    schema: int = field(default=CONFIG_SCHEMA)

    def __post_init__(self) -> None:
        if not 0 < self.l_freq < self.h_freq:
            raise ValueError(
                f"CleanConfig: need 0 < l_freq < h_freq, got {self.l_freq}, {self.h_freq}"
            )
        if self.h_freq >= self.sfreq / 2:
            raise ValueError(
                f"CleanConfig.h_freq={self.h_freq} must be below the output Nyquist {self.sfreq / 2}"
            )
        if self.line_freq is not None and self.line_freq <= 0:
            raise ValueError("CleanConfig.line_freq must be positive or None")
        if self.eeg_reference not in ("average", "none"):
            raise ValueError("CleanConfig.eeg_reference must be 'average' or 'none'")
        if self.block_seconds < 8:
            raise ValueError("CleanConfig.block_seconds must be at least 8 s")
        if not 0 < self.max_bad_fraction <= 1:
            raise ValueError("CleanConfig.max_bad_fraction must be in (0, 1]")
        if self.psd_n_fft < 8:
            raise ValueError("CleanConfig.psd_n_fft must be at least 8 output samples")
        if self.psd_fmin < 0 or (self.psd_fmax is not None and self.psd_fmax <= self.psd_fmin):
            raise ValueError("CleanConfig: need 0 <= psd_fmin < psd_fmax (or psd_fmax=None)")
        if self.psd_floor < 0:
            raise ValueError("CleanConfig.psd_floor must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, a JSON-stable form

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CleanConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"CleanConfig: unknown fields {sorted(unknown)}")
        kw = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                if isinstance(v, list):
                    v = tuple(tuple(i) if isinstance(i, list) else i for i in v)
                kw[f.name] = v
        return cls(**kw)

    @property
    def hash(self) -> str:
        """Stable content hash (hex, 16 chars) over every field."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_(self, **changes: Any) -> CleanConfig:
        return replace(self, **changes)

    def line_freqs(self, known: float | None) -> tuple[float, ...]:
        """Fundamental line frequencies to notch, given what the metadata says."""
        if self.line_freq is not None:
            return (float(self.line_freq),)
        if known is not None and known > 0:
            return (float(known),)
        return tuple(float(f) for f in self.fallback_line_freqs)

    def notch_freqs(self, known: float | None, sfreq_in: float) -> tuple[float, ...]:
        """All frequencies to notch: fundamentals and harmonics below the band edge."""
        nyq = min(sfreq_in, self.sfreq) / 2
        out: set[float] = set()
        for f0 in self.line_freqs(known):
            k = 1
            while k * f0 < self.h_freq and k * f0 < nyq - 1:
                out.add(round(k * f0, 6))
                if not self.notch_harmonics:
                    break
                k += 1
        return tuple(sorted(out))


DEFAULT_CONFIG = CleanConfig()
