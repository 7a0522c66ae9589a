"""10-s windows cut from a real 64-channel EEG recording, for the model tests.

Kept local and simple: read with MNE, resample to 256 Hz, positions from the standard 10-05
montage (names like ``Fc5.`` normalised), then the official per-window normalisation
(common average across channels, one scalar std per window).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from tests.conftest import meeg_file

EDF = "EDF/test_edf_overlapping_annotations.edf"


@functools.lru_cache(maxsize=1)
def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    import mne

    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.resample(256.0, verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        montage = mne.channels.make_standard_montage("standard_1005")
    by_upper = {n.upper(): n for n in montage.ch_names}
    positions = montage.get_positions()["ch_pos"]
    xyz = np.stack([positions[by_upper[c.strip(".").upper()]] for c in raw.ch_names])
    xyz = xyz - xyz.mean(0)
    xyz = xyz / np.sqrt(3 * (xyz**2).sum(1).mean())
    pos = np.concatenate([xyz, np.zeros_like(xyz)], axis=1).astype(np.float32)
    return raw.get_data().astype(np.float32), pos


def eeg_windows(seconds: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 64, seconds*256) windows, (N, 64, 6) positions, (N, 64) sensor types (EEG = 0)."""
    data, pos = _load(str(meeg_file(EDF)))
    n = seconds * 256
    wins = np.stack([data[:, i : i + n] for i in range(0, data.shape[1] - n + 1, n)])
    wins = wins - wins.mean(axis=1, keepdims=True)
    wins = wins / (wins.std(axis=(1, 2), keepdims=True) + 1e-5)
    x = torch.from_numpy(wins)
    p = torch.from_numpy(pos).expand(len(x), -1, -1).contiguous()
    return x, p, torch.zeros(x.shape[:2], dtype=torch.long)
