"""Window maths: where windows start, how they are normalised, why one is rejected.

Pure functions, arrays in and arrays out. Shapes: C channels, T samples per window.
Sensor type ids: EEG 0, MAG 1, GRAD 2 (:mod:`brainomni.records`).
"""

from __future__ import annotations

import numpy as np

from ..records import EEG, GRAD, MAG
from .config import PackConfig, QCConfig

TYPES = (EEG, MAG, GRAD)
REJECT_REASONS = ("nonfinite", "flat", "clipped", "float16_overflow")


def window_starts(n_times: int, window: int, stride: int) -> np.ndarray:
    """Start samples of the windows ``[s, s + window)`` with ``s + window <= n_times``.

    The official code loops ``while end < n`` and so drops a window that ends exactly on the
    last sample; we keep it (``<=``), the only case where the two differ.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0 samples, got {window}, {stride}")
    if n_times < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_times - window + 1, stride, dtype=np.int64)


def type_eps(sensor_type: int, config: PackConfig) -> float:
    """The eps added to the group std: ``eps_eeg`` for EEG, ``eps_meg`` for MAG and GRAD."""
    return config.eps_eeg if sensor_type == EEG else config.eps_meg


def normalise_window(
    x_CT: np.ndarray,
    types_C: np.ndarray,
    *,
    eps: tuple[float, float, float],
    return_std: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[int, float]]:
    """Per-sensor-type normalisation of one window (spec §2.11), float32 out.

    For each type group G (EEG, MAG, GRAD separately): subtract the across-channel mean at
    each time point, then divide the group by one scalar — the std over all of G's
    (channel, time) values after that subtraction — plus ``eps[type]``. With ``return_std``
    also the std per type id (SI units, eps not included).
    """
    x = np.asarray(x_CT, dtype=np.float64)
    if x.ndim != 2 or types_C.shape != (x.shape[0],):
        raise ValueError(f"expected x (C, T) and types (C,), got {x.shape} and {types_C.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    stds: dict[int, float] = {}
    for t in TYPES:
        rows = np.flatnonzero(types_C == t)
        if rows.size == 0:
            continue
        g = x[rows]
        g = g - g.mean(axis=0, keepdims=True)
        stds[t] = float(g.std())
        out[rows] = g / (stds[t] + eps[t])
    return (out, stds) if return_std else out


def qc_reason(x_CT: np.ndarray, types_C: np.ndarray, qc: QCConfig) -> str | None:
    """Why the raw window ``x_CT`` must be rejected, or ``None`` when it passes.

    Reasons, checked in this order: ``nonfinite``, ``flat``, ``clipped`` (see
    :class:`~brainomni.pack.config.QCConfig`).
    """
    if not np.all(np.isfinite(x_CT)):
        return "nonfinite"
    x = np.asarray(x_CT, dtype=np.float64)
    ch_std = x.std(axis=1)
    for t in TYPES:
        rows = np.flatnonzero(types_C == t)
        if rows.size == 0:
            continue
        g = x[rows]
        if (g - g.mean(axis=0, keepdims=True)).std() < qc.flat_group_std[t]:
            return "flat"
        if np.mean(ch_std[rows] < qc.flat_channel_std[t]) > qc.max_flat_fraction:
            return "flat"
    limit = np.asarray(qc.max_abs)[types_C.astype(np.int64)]
    if np.any(np.abs(x).max(axis=1) > limit):
        return "clipped"
    hi = x.max(axis=1, keepdims=True)
    lo = x.min(axis=1, keepdims=True)
    plateau = np.maximum((x == hi).mean(axis=1), (x == lo).mean(axis=1))
    if np.any(plateau > qc.max_plateau_fraction):
        return "clipped"
    return None


def normalise_positions(
    pos_C3: np.ndarray, types_C: np.ndarray
) -> tuple[np.ndarray, dict[str, dict[str, object]]]:
    """Positions centred and scaled per group (spec §2.6): EEG, and MEG = MAG ∪ GRAD.

    Each group: subtract its centroid, divide by ``sqrt(3 * mean(||p||^2))`` of the centred
    positions. Returns ``(pos, params)``; ``params[group] = {"centroid": [x, y, z] (m),
    "scale": s (m)}`` so that raw = pos * scale + centroid. Orientations are not touched.
    """
    pos = np.asarray(pos_C3, dtype=np.float64).copy()
    params: dict[str, dict[str, object]] = {}
    for name, mask in (("EEG", types_C == EEG), ("MEG", (types_C == MAG) | (types_C == GRAD))):
        if not mask.any():
            continue
        p = pos[mask]
        centroid = p.mean(axis=0)
        p = p - centroid
        scale = float(np.sqrt(3.0 * np.mean(np.sum(p**2, axis=1))))
        if scale > 0:
            p = p / scale
        pos[mask] = p
        params[name] = {"centroid": [float(v) for v in centroid], "scale": scale}
    return pos.astype(np.float32), params


def mean_periodogram(x_CT: np.ndarray, nfft: int) -> np.ndarray:
    """Channel-averaged periodogram of one window: mean over channels and non-overlapping
    ``nfft``-sample Hann segments of ``|rfft|^2`` (arbitrary units), shape ``(nfft//2+1,)``."""
    c, t = x_CT.shape
    n = t // nfft
    if n == 0 or c == 0:
        return np.zeros(nfft // 2 + 1)
    seg = np.asarray(x_CT[:, : n * nfft], dtype=np.float32).reshape(c, n, nfft)
    spec = np.abs(np.fft.rfft(seg * np.hanning(nfft).astype(np.float32), axis=-1)) ** 2
    return spec.mean(axis=(0, 1)).astype(np.float64)
