"""Bad-channel rules (pure functions over :class:`~brainomni.signal.stats.ChannelStats`).

Rules, each reported with its reason:

- ``flat``: the channel's 1-s peak-to-peak is below ``flat_rel`` x the median of its
  sensor type (or below an absolute floor for its unit) in more than ``flat_fraction`` of
  the windows. Every sensor type.
- ``clipped``: the channel sits at its own non-zero extreme value (max or min) for at least
  ``clip_run`` samples in a window, in more than ``clip_fraction`` of its windows and in at
  least ``clip_min_windows`` of them (a healthy channel reaches its extreme once; gaps
  filled with zeros are not a rail). Every sensor type.
- ``line_noise``: line-band power ratio far above its type's (robust z > ``line_noise_z``
  on log ratios, and a ratio of at least ``line_noise_min_ratio``). Every sensor type.
- ``psd_outlier``: the official spectral rule (EEG only), as the official code decides
  it: among the EEG channels not already marked bad (file, channels.tsv, caller), the
  natural log of (Welch PSD + 1e-16) over every bin (see ``ChannelStats`` for the PSD),
  pairwise Euclidean distances between channels, each channel's mean distance; outliers
  beyond Q1 - k IQR or Q3 + k IQR (k = 10). It runs on every such channel, whatever the
  other rules found (a channel can carry several reasons), so its decisions are the
  official ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..records import EEG
from .config import CleanConfig

UNIT_FLOOR_KEYS = {"V", "T", "T/m"}


@dataclass
class BadReport:
    """Bad channels (indices into the kept channels) with their reasons."""

    reasons: dict[int, list[str]] = field(default_factory=dict)
    flat_seconds: np.ndarray | None = None  # (C,) seconds flagged flat per channel
    clipped_fraction: np.ndarray | None = None  # (C,) fraction of windows pinned
    line_ratio: np.ndarray | None = None  # (C,) max line-band ratio

    def add(self, idx: int, reason: str) -> None:
        self.reasons.setdefault(int(idx), [])
        if reason not in self.reasons[int(idx)]:
            self.reasons[int(idx)].append(reason)

    @property
    def indices(self) -> list[int]:
        return sorted(self.reasons)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med = np.median(v)
    mad = np.median(np.abs(v - med)) * 1.4826
    return (v - med) / max(mad, 1e-12)


def flat_windows(
    ptp: np.ndarray, types: np.ndarray, units: list[str], config: CleanConfig
) -> np.ndarray:
    """(C, W) bool: windows in which each channel is flat."""
    floors = dict(config.flat_abs)
    flat = np.zeros(ptp.shape, dtype=bool)
    if ptp.shape[1] == 0:
        return flat
    for t in np.unique(types):
        rows = np.flatnonzero(types == t)
        typical = np.median(ptp[rows])
        thr_rel = config.flat_rel * typical
        for r in rows:
            thr = max(thr_rel, floors.get(units[r], 0.0))
            flat[r] = ptp[r] <= thr
    return flat


def psd_outliers(log_psd: np.ndarray, k: float) -> np.ndarray:
    """Indices of channels whose mean log-spectral distance lies outside Q1-kIQR..Q3+kIQR."""
    n = log_psd.shape[0]
    if n < 3:
        return np.zeros(0, dtype=int)
    x = log_psd - log_psd.mean(axis=0)  # distances do not change; the Gram form is exact-er
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    dist = np.sqrt(d2)
    # the official averages over n (itself included, distance 0); over n - 1 here: every
    # mean scales by the same factor, and so do the quartiles: the same decisions
    mean_d = dist.sum(1) / (n - 1)
    q1, q3 = np.percentile(mean_d, [25, 75])
    iqr = q3 - q1
    return np.flatnonzero((mean_d < q1 - k * iqr) | (mean_d > q3 + k * iqr))


def detect_bads(
    *,
    windows: dict[str, np.ndarray],
    line_ratio: np.ndarray,
    spectrum: tuple[np.ndarray, np.ndarray, np.ndarray],
    types: np.ndarray,
    units: list[str],
    config: CleanConfig,
    known: set[int] | frozenset[int] = frozenset(),
) -> BadReport:
    """Apply every rule; ``windows`` is :meth:`ChannelStats.windows` (1-s input windows);
    ``spectrum`` is ``(rows, freqs, psd)``: the rule PSD (:meth:`ChannelStats.rule_psd`)
    of channels ``rows``; ``known``: channels already marked bad (left out of the spectral
    rule's reference, as the official ``pick_types(..., exclude="bads")`` leaves them)."""
    ptp, wmax, wmin = windows["ptp"], windows["max"], windows["min"]
    rep = BadReport()
    n_ch, n_win = ptp.shape
    flat = flat_windows(ptp, types, units, config)
    rep.flat_seconds = flat.sum(1).astype(float)
    if n_win:
        frac = flat.mean(1)
        for i in np.flatnonzero(frac > config.flat_fraction):
            rep.add(i, f"flat in {frac[i]:.0%} of 1-s windows")
    # clipping: windows pinned at the channel's own extreme
    if n_win:
        gmax = wmax.max(1, keepdims=True)
        gmin = wmin.min(1, keepdims=True)
        run = config.clip_run
        at_max = (wmax == gmax) & (windows["n_at_max"] >= run) & (gmax != 0)
        at_min = (wmin == gmin) & (windows["n_at_min"] >= run) & (gmin != 0)
        pinned = (at_max | at_min) & ~flat
        n_pinned = pinned.sum(1)
        frac = n_pinned / n_win
        rep.clipped_fraction = np.where(n_pinned >= 2, frac, 0.0)
        hit = (n_pinned >= config.clip_min_windows) & (frac > config.clip_fraction)
        for i in np.flatnonzero(hit):
            if i not in rep.reasons:
                rep.add(i, f"clipped: at its extreme value in {n_pinned[i]} of {n_win} windows")
    else:
        rep.clipped_fraction = np.zeros(n_ch)
    # line noise (per type)
    if line_ratio.size:
        ratio = line_ratio.max(1)
        rep.line_ratio = ratio
        for t in np.unique(types):
            rows = np.flatnonzero(types == t)
            if rows.size < 4:
                continue
            z = _robust_z(np.log10(np.maximum(ratio[rows], 1e-12)))
            for r, zr in zip(rows, z, strict=False):
                if zr > config.line_noise_z and ratio[r] >= config.line_noise_min_ratio:
                    rep.add(r, f"line noise {ratio[r]:.0f}x its neighbourhood (robust z {zr:.1f})")
    else:
        rep.line_ratio = np.ones(n_ch)
    # official spectral outlier rule, EEG only, among channels not marked bad beforehand
    rows, freqs, psd = spectrum
    keep = [j for j, i in enumerate(rows) if types[i] == EEG and int(i) not in known]
    if len(keep) >= config.psd_min_channels and psd.size and psd[keep].any():
        fmax = np.inf if config.psd_fmax is None else config.psd_fmax
        band = (freqs >= config.psd_fmin) & (freqs <= fmax)
        lp = np.log(np.maximum(psd[np.ix_(keep, band)] + config.psd_floor, 1e-300))
        for j in psd_outliers(lp, config.psd_iqr_factor):
            rep.add(
                rows[keep[j]],
                f"spectral outlier (log-PSD distance beyond {config.psd_iqr_factor:g} IQR)",
            )
    return rep
