"""Every real recording ends as ok or as an honest skip, and ok stores are complete."""

from __future__ import annotations

import numpy as np
import pytest

from brainomni.clean import preprocess_recording
from brainomni.records import EEG, GRAD, MAG
from brainomni.stores.recording import is_complete, open_recording
from tests.conftest import meeg_file

# file -> (outcome, error class or expected counts {EEG, MAG, GRAD})
EXPECTED = {
    "SSS/sample_audvis_trunc_raw_sss.fif": ("ok", {"EEG": 60, "MAG": 102, "GRAD": 204}),
    "SSS/test_move_anon_erm_raw.fif": ("ok", {"EEG": 60, "MAG": 102, "GRAD": 204}),
    "misc/neuromag122_test_file-raw.fif": ("ok", {"EEG": 0, "MAG": 0, "GRAD": 122}),
    "CTF/testdata_ctf_short_discontinuous.ds": ("ok", {"EEG": 8, "MAG": 0, "GRAD": 273}),
    "KIT/MQKIT_125_2sec.con": ("ok", {"EEG": 0, "MAG": 0, "GRAD": 125}),
    "EDF/test_edf_overlapping_annotations.edf": ("ok", {"EEG": 64, "MAG": 0, "GRAD": 0}),
    "BDF/test_bdf_stim_channel.bdf": ("ok", {"EEG": 3, "MAG": 0, "GRAD": 0}),
    "CNT/scan41_short.cnt": ("ok", {"EEG": 126, "MAG": 0, "GRAD": 0}),
    "EGI/test_egi_multiepoch_eprime.mff": ("ok", {"EEG": 257, "MAG": 0, "GRAD": 0}),
    "misc/sample_invalid_birthday_raw.fif": ("skipped", "TooShort"),
    "EDF/SC4001EC-Hypnogram.edf": ("skipped", "SkipRecording"),
    # channel names that no standard system places ("1".."71", "EEG 000", BioSemi ABC
    # labels, generator test signals, a single ECG): honest skips with the fix named
    "Brainvision/test_NO.vhdr": ("skipped", "NoPlaceableChannels"),
    "EEGLAB/test_raw.set": ("skipped", "NoPlaceableChannels"),
    "EDF/test_reduced.edf": ("skipped", "NoPlaceableChannels"),
    "BDF/test_generator_2.bdf": ("skipped", "NoPlaceableChannels"),
    "GDF/test_1ch.gdf": ("skipped", "NoPlaceableChannels"),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_real_file_outcome(rel, tmp_path):
    path = meeg_file(rel)
    outcome, detail = EXPECTED[rel]
    out = tmp_path / "rec.zarr"
    res = preprocess_recording(str(path), out=str(out))
    assert res.outcome == outcome, (res.outcome, res.reason)
    if outcome != "ok":
        assert res.error_class == detail
        assert res.reason and str(path.name) in res.reason  # the reason names the file
        if detail == "NoPlaceableChannels":
            assert "electrodes.tsv" in res.reason  # ... and the fix
        assert not out.exists()
        return
    assert res.table.summary() == detail
    assert is_complete(str(out))
    g = open_recording(str(out))
    sig = g["signal"][:]
    n = len(res.table)
    assert sig.shape[0] == n and sig.dtype == np.float32
    assert (
        sig.shape[1] == round(res.duration_s * 256) or abs(sig.shape[1] - res.duration_s * 256) <= 1
    )
    assert np.all(np.isfinite(sig))
    assert g["sensor_pos"].shape == (n, 3) and g["sensor_ori"].shape == (n, 3)
    types = g["sensor_type"][:]
    assert types.dtype == np.int8 and set(np.unique(types)) <= {EEG, MAG, GRAD}
    pos = g["sensor_pos"][:]
    assert np.all(np.isfinite(pos)) and np.all(np.linalg.norm(pos, axis=1) > 0)
    ori = g["sensor_ori"][:]
    meg = types != EEG
    np.testing.assert_allclose(np.linalg.norm(ori[meg], axis=1), 1.0, atol=1e-5)
    assert np.all(ori[~meg] == 0)
    attrs = g.attrs.asdict()
    assert attrs["ch_names"] == res.table.names
    assert attrs["sfreq"] == 256.0
    assert len(attrs["config_hash"]) == 16 and attrs["config"]["sfreq"] == 256.0
    prov = attrs["provenance"]
    assert prov["reader"].startswith("mne.io.") and prov["code_version"]
    qc = attrs["qc"]
    for key in (
        "bad_channels",
        "interpolated",
        "dropped",
        "flat_seconds_total",
        "clipped_fraction",
        "line_freq",
        "notch_freqs",
        "input_duration_s",
        "output_duration_s",
        "rms",
    ):
        assert key in qc
    # per-type RMS recorded for the types present, in plausible SI ranges
    for t, (lo, hi) in {"EEG": (1e-8, 1.0), "MAG": (1e-16, 1e-9), "GRAD": (1e-15, 1e-7)}.items():
        if detail[t]:
            assert lo < qc["rms"][t] < hi, (t, qc["rms"][t])


def test_known_bad_channels_and_marked_bads(tmp_path):
    """CNT marks LEFT_EAR bad in its header: interpolated with the reason recorded."""
    res = preprocess_recording(str(meeg_file("CNT/scan41_short.cnt")), out=str(tmp_path / "c.zarr"))
    bad = {b["name"]: b["reasons"] for b in res.qc["bad_channels"]}
    assert "marked bad in the file" in bad["LEFT_EAR"]
    assert "LEFT_EAR" in res.qc["interpolated"]


def test_rerun_is_idempotent_and_atomic(tmp_path):
    """Writing the same store twice gives identical content; no temporary folders remain."""
    path = str(meeg_file("KIT/MQKIT_125_2sec.con"))
    out = tmp_path / "k.zarr"
    preprocess_recording(path, out=str(out))
    first = open_recording(str(out))["signal"][:]
    preprocess_recording(path, out=str(out))
    np.testing.assert_array_equal(open_recording(str(out))["signal"][:], first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.zarr"]


def test_inspect_writes_nothing(tmp_path):
    res = preprocess_recording(
        str(meeg_file("KIT/MQKIT_125_2sec.con")), out=None, cache_dir=str(tmp_path)
    )
    assert res.outcome == "ok" and res.store is None
    assert list(tmp_path.iterdir()) == []
