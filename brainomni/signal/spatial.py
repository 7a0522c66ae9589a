"""Spatial operators: interpolation of bad channels and the EEG average reference.

Both are linear in the channels, so they are computed once as small matrices and applied
block by block. The interpolation weights are MNE's own (``interpolate_bads`` with
``mode="accurate"`` and ``origin=(0, 0, 0.04)``, as the official code calls it). EEG: we
run MNE's routine on an identity "recording" whose samples are the unit vectors, which
yields exactly the matrix MNE applies. MEG: the same matrix from ``meg_interp`` (MNE's
computation, several times faster, and cached per sensor geometry so that the second pass
and every other bad set of a recording cost only a small pseudo-inverse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import EEG


@dataclass(frozen=True)
class SpatialOp:
    """``y[bad_rows] = weights @ y``; then EEG rows re-referenced to their average."""

    bad_rows: np.ndarray  # (B,) int
    weights: np.ndarray  # (B, C) float32; zero columns for bad channels
    eeg_rows: np.ndarray  # (E,) int, empty when no reference is applied

    @property
    def is_identity(self) -> bool:
        return self.bad_rows.size == 0 and self.eeg_rows.size == 0

    def changed_rows(self, before: SpatialOp) -> np.ndarray:
        """Rows whose output differs from ``before``'s: newly bad channels, and every EEG row
        when an EEG channel became bad (the average reference changes)."""
        new = np.setdiff1d(self.bad_rows, before.bad_rows)
        if self.eeg_rows.size and np.intersect1d(new, self.eeg_rows).size:
            new = np.union1d(new, self.eeg_rows)
        return new

    def apply(self, y: np.ndarray) -> np.ndarray:
        """Apply in place to ``y`` (C, n) and return it."""
        if self.bad_rows.size:
            y[self.bad_rows] = self.weights @ y
        if self.eeg_rows.size:
            y[self.eeg_rows] -= y[self.eeg_rows].mean(axis=0, keepdims=True)
        return y


def interpolation_weights(info, bad_rows: list[int], *, origin, mode: str) -> np.ndarray:
    """(B, C) weights that MNE's ``interpolate_bads`` applies for ``bad_rows`` of ``info``.

    ``info`` must describe exactly the kept channels (positions set). Raises ``ValueError``
    with MNE's message when interpolation is impossible.
    """
    from .meg_interp import meg_mapping

    n = len(info["ch_names"])
    bad_rows = [int(i) for i in bad_rows]
    w = np.zeros((len(bad_rows), n), dtype=np.float32)
    if not bad_rows:
        return w
    meg = meg_mapping(info, bad_rows, origin=origin, mode=mode)
    # None: an unusually large helmet, left to MNE's memory-bounded code below
    meg_bad, meg_w = meg if meg is not None else (np.zeros(0, int), np.zeros((0, n)))
    where = {r: k for k, r in enumerate(bad_rows)}
    for r, row in zip(meg_bad.tolist(), meg_w, strict=True):
        w[where[r]] = row
    rest = [r for r in bad_rows if r not in set(meg_bad.tolist())]
    if rest:
        mat = _mne_weights(info, rest, origin=origin, mode=mode)
        for r, row in zip(rest, mat, strict=True):
            w[where[r]] = row
    return w


def _mne_weights(info, bad_rows: list[int], *, origin, mode: str) -> np.ndarray:
    """MNE's ``interpolate_bads`` run on the unit vectors (used for non-MEG channels)."""
    import mne

    n = len(info["ch_names"])
    info = info.copy()
    with info._unlock():
        info["bads"] = [info["ch_names"][i] for i in bad_rows]
        info["projs"] = []
        info["comps"] = []
    raw = mne.io.RawArray(np.eye(n), info, verbose="error")
    raw.interpolate_bads(reset_bads=True, mode=mode, origin=origin, verbose="error")
    mat = raw.get_data()  # column j = the result for the unit vector on channel j
    return mat[bad_rows].astype(np.float32)


def build_spatial_op(
    info,
    types: np.ndarray,
    bad_rows: list[int],
    *,
    origin=(0.0, 0.0, 0.04),
    mode: str = "accurate",
    eeg_reference: str = "average",
) -> SpatialOp:
    """Interpolation for ``bad_rows`` plus the EEG average reference (when EEG is present)."""
    w = interpolation_weights(info, list(bad_rows), origin=origin, mode=mode)
    eeg_rows = np.flatnonzero(types == EEG) if eeg_reference == "average" else np.zeros(0, int)
    if eeg_rows.size < 2:
        eeg_rows = np.zeros(0, dtype=int)
    return SpatialOp(np.asarray(bad_rows, dtype=int), w, eeg_rows.astype(int))
