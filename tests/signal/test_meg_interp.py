"""MEG interpolation weights (brainomni.signal.meg_interp) against MNE's own computation.

MNE's reference is computed independently with its private ``_map_meg_or_eeg_channels``
(what ``interpolate_bads`` calls for MEG) on the good and bad channels of real CTF 275,
Neuromag 306 and KIT 125 geometries, and with the public ``interpolate_bads`` on unit
vectors for one case. To keep the suite fast, the geometries are every third channel of
each helmet or fewer (MNE's cost grows with the square of the channel count).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import meeg_file

mne = pytest.importorskip("mne")

ORIGIN = (0.0, 0.0, 0.04)
FILES = {
    "ctf": "CTF/testdata_ctf_short_discontinuous.ds",
    "neuromag": "SSS/sample_audvis_trunc_raw_sss.fif",
    "kit": "KIT/MQKIT_125_2sec.con",
}


def _meg_info(name: str, step: int = 3):
    raw = mne.io.read_raw(str(meeg_file(FILES[name])), verbose="error")
    picks = mne.pick_types(raw.info, meg=True, ref_meg=False)[::step]
    info = mne.pick_info(raw.info, picks, verbose="error")
    with info._unlock():
        info["projs"], info["comps"], info["bads"] = [], [], []
    return info


def _mne_mapping(info, bad_rows):
    """MNE's mapping good -> bad, as ``_interpolate_bads_meeg`` builds it."""
    from mne.forward import _map_meg_or_eeg_channels

    good = [i for i in range(len(info["ch_names"])) if i not in bad_rows]
    m = _map_meg_or_eeg_channels(
        mne.pick_info(info, good), mne.pick_info(info, bad_rows), mode="accurate", origin=ORIGIN
    )
    full = np.zeros((len(bad_rows), len(info["ch_names"])))
    full[:, good] = m
    return full


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("name", sorted(FILES))
def test_weights_equal_mne_on_real_geometries(name):
    from brainomni.signal.meg_interp import _CACHE, meg_mapping

    info = _meg_info(name, step={"ctf": 6, "neuromag": 4, "kit": 3}[name])
    _CACHE.clear()
    n = len(info["ch_names"])
    # first call: known bads; second: the rules' bads (a superset), from the cached dots
    for bads in ([n // 2], [2, n // 2, n - 1]):
        rows, ours = meg_mapping(info, bads, origin=ORIGIN)
        assert rows.tolist() == sorted(bads)
        ref = _mne_mapping(info, sorted(bads))
        assert _rel(ours, ref) < 1e-6, name
    assert len(_CACHE) == 1  # one geometry: the dot products were computed once


def test_spatial_weights_equal_interpolate_bads_with_eeg_and_meg():
    """The whole operator (MEG via meg_interp, EEG via MNE) equals ``interpolate_bads`` on
    unit vectors, for the Neuromag + EEG file with one bad of each modality."""
    from brainomni.signal.spatial import interpolation_weights

    raw = mne.io.read_raw(str(meeg_file(FILES["neuromag"])), verbose="error")
    picks = np.concatenate(
        [mne.pick_types(raw.info, meg=True)[::4], mne.pick_types(raw.info, eeg=True)[::2]]
    )
    info = mne.pick_info(raw.info, picks, verbose="error")
    with info._unlock():
        info["projs"], info["bads"] = [], []
    n = len(info["ch_names"])
    bads = [5, n - 3]  # a MEG and an EEG channel
    ours = interpolation_weights(info, bads, origin=ORIGIN, mode="accurate")
    ref_info = info.copy()
    with ref_info._unlock():
        ref_info["bads"] = [info["ch_names"][i] for i in bads]
    r = mne.io.RawArray(np.eye(n), ref_info, verbose="error")
    r.interpolate_bads(reset_bads=True, mode="accurate", origin=ORIGIN, verbose="error")
    ref = r.get_data()[bads]
    for k in range(len(bads)):  # float32 output: compare per row at float32 precision
        assert _rel(ours[k].astype(float), ref[k]) < 1e-6


@pytest.mark.parametrize("beta_max", [0.12, 0.33, 0.6, 0.95])
def test_series_equal_mne_sums(beta_max):
    """The truncated sums equal MNE's ``_comp_sums_meg`` (99 terms): the full recurrences
    for every pair, the identities for pairs with |cos| <= 0.9."""
    from mne.forward._lead_dots import _comp_sums_meg, _get_legen_fun

    from brainomni.signal.meg_interp import _X_APART, _meg_sums, _meg_sums_apart, _pair_degrees

    rng = np.random.default_rng(0)
    ct = np.concatenate([rng.uniform(-1, 1, 300), [1.0, -1.0, 0.0, 1 - 1e-12]])
    beta = rng.uniform(0.01, beta_max, ct.size)
    leg, n_fact = _get_legen_fun("meg", False, 100)
    ref = _comp_sums_meg(beta, ct, leg, n_fact, False)
    deg = int(_pair_degrees(beta, 99).max())
    ours = _meg_sums(ct, beta, deg)
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.all(np.abs(ours - ref) <= 1e-12 * scale)
    apart = np.abs(ct) <= _X_APART
    fast = _meg_sums_apart(ct[apart], beta[apart], deg)
    assert np.all(np.abs(fast - ref[:, apart]) <= 1e-12 * scale)
    assert deg < 99 or beta_max > 0.55  # helmet geometries need fewer terms


def test_bad_geometry_is_a_value_error():
    from brainomni.signal.meg_interp import meg_mapping

    info = _meg_info("kit", step=8)
    with pytest.raises(ValueError, match="every MEG channel"):
        meg_mapping(info, list(range(len(info["ch_names"]))), origin=ORIGIN)
    with info._unlock():
        info["chs"][1]["loc"][:3] = np.nan
    with pytest.raises(ValueError, match="position"):
        meg_mapping(info, [0], origin=ORIGIN)


def test_large_helmet_falls_back_to_mne(monkeypatch):
    """Past MAX_POINTS integration points (memory bound) the weights come from MNE's code."""
    from brainomni.signal import meg_interp
    from brainomni.signal.spatial import interpolation_weights

    info = _meg_info("kit", step=6)
    fast = interpolation_weights(info, [2], origin=ORIGIN, mode="accurate")
    monkeypatch.setattr(meg_interp, "MAX_POINTS", 10)
    assert meg_interp.meg_mapping(info, [2], origin=ORIGIN) is None
    slow = interpolation_weights(info, [2], origin=ORIGIN, mode="accurate")
    assert _rel(fast.astype(float), slow.astype(float)) < 1e-6
