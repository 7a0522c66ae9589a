"""Packing configuration: window profile, normalisation, QC rules and shard layout.

Frozen and hashed like :class:`brainomni.signal.config.CleanConfig`: every pack index and
manifest records the config and its hash, and a resumed pack refuses a different hash.
Durations in seconds, amplitudes in the store's SI units (V, T, T/m).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PACK_SCHEMA = 1
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class QCConfig:
    """Window rejection rules (applied to the un-normalised window, per sensor type).

    * ``nonfinite``: any NaN/inf sample.
    * ``flat``: a type group whose common-average-referenced std is below
      ``flat_group_std`` (same units as the data), or more than ``max_flat_fraction`` of a
      group's channels with a std below ``flat_channel_std``.
    * ``clipped``: a channel that sits on its own extreme value (max or min, exact float
      equality) for more than ``max_plateau_fraction`` of the window — the signature of a
      saturated amplifier — or any sample beyond ``max_abs`` for its type (non-physiological).
    """

    # Per type: EEG (V), MAG (T), GRAD (T for axial, T/m for planar: the looser of the two).
    flat_channel_std: tuple[float, float, float] = (1e-8, 1e-15, 1e-15)
    flat_group_std: tuple[float, float, float] = (1e-8, 1e-15, 1e-15)
    max_flat_fraction: float = 0.1
    max_plateau_fraction: float = 0.01
    max_abs: tuple[float, float, float] = (5e-3, 1e-8, 1e-6)

    def __post_init__(self) -> None:
        for name in ("flat_channel_std", "flat_group_std", "max_abs"):
            v = getattr(self, name)
            if len(v) != 3 or any(not x > 0 for x in v):
                raise ValueError(f"QCConfig.{name} needs 3 positive values (EEG, MAG, GRAD)")
        if not 0 <= self.max_flat_fraction < 1:
            raise ValueError("QCConfig.max_flat_fraction must be in [0, 1)")
        if not 0 < self.max_plateau_fraction < 1:
            raise ValueError("QCConfig.max_plateau_fraction must be in (0, 1)")


@dataclass(frozen=True)
class PackConfig:
    """How windows are cut, normalised, checked and written.

    ``window_s``/``stride_s`` in seconds at the store rate ``sfreq`` (Hz). Windows are
    non-overlapping when ``stride_s == window_s`` and start at 0, ``stride``, ... while
    ``start + window <= n_times`` (a trailing partial window is dropped).
    """

    profile: str = "custom"
    window_s: float = 10.0
    stride_s: float = 10.0
    sfreq: float = 256.0
    dtype: str = "float16"
    # spec §2.11: eps added to the group std, EEG 1e-5, MEG (MAG and GRAD) 1e-13.
    eps_eeg: float = 1e-5
    eps_meg: float = 1e-13
    # spec §2.6: positions centred and scaled per group (EEG; MEG = MAG and GRAD).
    normalize_positions: bool = True
    target_shard_bytes: int = 512 * 1024 * 1024
    spectrum_nfft: int = 512  # periodogram segment for the per-type average spectra
    qc: QCConfig = field(default_factory=QCConfig)

    def __post_init__(self) -> None:
        if not self.profile or "/" in self.profile:
            raise ValueError(f"PackConfig.profile must be a plain name, got {self.profile!r}")
        if not self.sfreq > 0:
            raise ValueError(f"PackConfig.sfreq must be > 0 Hz, got {self.sfreq}")
        for name in ("window_s", "stride_s"):
            v = getattr(self, name)
            if not v > 0 or abs(v * self.sfreq - round(v * self.sfreq)) > 1e-6:
                raise ValueError(
                    f"PackConfig.{name} must be > 0 and a whole number of samples at "
                    f"{self.sfreq:g} Hz, got {v}"
                )
        if self.dtype not in DTYPES:
            raise ValueError(f"PackConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.eps_eeg > 0 and self.eps_meg > 0):
            raise ValueError("PackConfig.eps_eeg and eps_meg must be > 0")
        if self.target_shard_bytes < 1024:
            raise ValueError("PackConfig.target_shard_bytes must be at least 1024 bytes")
        if self.spectrum_nfft < 8 or self.spectrum_nfft > self.window:
            raise ValueError("PackConfig.spectrum_nfft must be in [8, window samples]")

    @property
    def window(self) -> int:
        """Window length in samples."""
        return int(round(self.window_s * self.sfreq))

    @property
    def stride(self) -> int:
        """Stride in samples."""
        return int(round(self.stride_s * self.sfreq))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = PACK_SCHEMA
        return d

    @property
    def hash(self) -> str:
        """sha256 over every field (and the schema), first 16 hex digits."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_(self, **kw: Any) -> PackConfig:
        return replace(self, **kw)


PROFILES: dict[str, PackConfig] = {
    # Stage 1 (BrainTokenizer): 10-s segments, stride 10 s (spec §2.10).
    "tokenizer-10s": PackConfig(profile="tokenizer-10s", window_s=10.0, stride_s=10.0),
    # Stage 2 (BrainOmni): 30-s segments, stride 30 s.
    "omni-30s": PackConfig(profile="omni-30s", window_s=30.0, stride_s=30.0),
}


def get_profile(name: str, **overrides: Any) -> PackConfig:
    """A named profile, optionally with fields overridden (``dtype="float32"``, ...)."""
    if name not in PROFILES:
        raise ValueError(f"unknown pack profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name].with_(**overrides) if overrides else PROFILES[name]
