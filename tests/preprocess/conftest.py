"""Helpers for preprocessing tests: longer recordings built from the real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import meeg_file


def tile_recording(src: Path, dest: Path, n_times: int, *, picks=None) -> Path:
    """Write ``src`` tiled (mirrored, so there are no jumps) to ``n_times`` samples as FIF.

    Keeps the real header: sensor geometry, coil types, units, sampling rate.
    """
    import mne

    raw = mne.io.read_raw(str(src), preload=True, verbose="error")
    if picks is not None:
        raw.pick(picks)
    d = raw.get_data()
    seg = np.concatenate([d, d[:, ::-1]], axis=1)
    big = np.tile(seg, (1, n_times // seg.shape[1] + 1))[:, :n_times]
    out = mne.io.RawArray(big, raw.info, verbose="error")
    out.set_annotations(None)
    out.save(str(dest), overwrite=True, verbose="error")
    return dest


@pytest.fixture(scope="session")
def tiled(tmp_path_factory):
    """Factory: (rel path, n_times) -> tiled FIF path, cached per session."""
    cache: dict[tuple[str, int], Path] = {}
    root = tmp_path_factory.mktemp("tiled")

    def make(rel: str, n_times: int) -> Path:
        key = (rel, n_times)
        if key not in cache:
            src = meeg_file(rel)
            cache[key] = tile_recording(src, root / f"{len(cache)}_raw.fif", n_times)
        return cache[key]

    return make
