"""Sensor tables on real recordings of every vendor, and on synthetic infos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainomni.errors import SkipRecording
from brainomni.readers import open_raw
from brainomni.records import EEG, GRAD, MAG
from brainomni.sensors import build_sensor_table, coil_class, sensor_table_json
from tests.conftest import meeg_file


def _table(rel: str, **kwargs):
    with open_raw(str(meeg_file(rel))) as opened:
        return build_sensor_table(opened.raw.info, **kwargs), opened.raw.info


def _check_invariants(table) -> None:
    assert np.all(np.isfinite(table.pos)) and np.all(np.isfinite(table.ori))
    meg = table.types != EEG
    np.testing.assert_allclose(np.linalg.norm(table.ori[meg], axis=1), 1.0, atol=1e-6)
    assert np.all(table.ori[~meg] == 0)
    assert np.all(np.linalg.norm(table.pos, axis=1) > 0)


@pytest.mark.parametrize(
    ("rel", "counts", "dropped"),
    [
        (
            "SSS/sample_audvis_trunc_raw_sss.fif",
            {"EEG": 60, "MAG": 102, "GRAD": 204},
            {"stim channel": 9, "eog channel": 1},
        ),
        (
            "SSS/test_move_anon_erm_raw.fif",
            {"EEG": 60, "MAG": 102, "GRAD": 204},
            {"stim channel": 11, "misc channel": 12, "eog channel": 2, "ecg channel": 1},
        ),
        (
            "misc/neuromag122_test_file-raw.fif",
            {"EEG": 0, "MAG": 0, "GRAD": 122},
            {"stim channel": 7},
        ),
        (
            "CTF/testdata_ctf_short_discontinuous.ds",
            {"EEG": 8, "MAG": 0, "GRAD": 273},
            {"MEG reference sensor": 28, "misc channel": 44, "stim channel": 3},
        ),
        (
            "KIT/MQKIT_125_2sec.con",
            {"EEG": 0, "MAG": 0, "GRAD": 125},
            {"MEG reference sensor": 3, "misc channel": 64, "stim channel": 1},
        ),
        (
            "EGI/test_egi_multiepoch_eprime.mff",
            {"EEG": 257, "MAG": 0, "GRAD": 0},
            {"stim channel": 6},
        ),
        (
            "CNT/scan41_short.cnt",
            {"EEG": 126, "MAG": 0, "GRAD": 0},
            {"eog channel (by its name)": 2},
        ),
    ],
)
def test_vendor_sensor_types(rel: str, counts: dict, dropped: dict) -> None:
    table, info = _table(rel)
    assert table.summary() == counts
    reasons: dict[str, int] = {}
    for d in table.dropped:
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    assert reasons == dropped
    assert {s.split(":")[0] for s in table.pos_source} == {"file"}  # CNT: "file:unit-sphere*"
    assert len(table) + len(table.dropped) == len(info["ch_names"])
    assert [info["ch_names"][i] for i in table.picks] == table.names
    _check_invariants(table)


def test_planar_orientation_is_the_gradient_direction() -> None:
    table, info = _table("SSS/sample_audvis_trunc_raw_sss.fif")
    i = table.types.tolist().index(GRAD)
    loc = info["chs"][int(table.picks[i])]["loc"]
    np.testing.assert_allclose(table.ori[i], loc[3:6] / np.linalg.norm(loc[3:6]), atol=1e-6)
    j = table.types.tolist().index(MAG)
    loc = info["chs"][int(table.picks[j])]["loc"]
    np.testing.assert_allclose(table.ori[j], loc[9:12] / np.linalg.norm(loc[9:12]), atol=1e-6)


def test_coil_classes() -> None:
    from mne.io.constants import FIFF

    expect = {
        FIFF.FIFFV_COIL_VV_PLANAR_T1: "planar",
        FIFF.FIFFV_COIL_NM_122: "planar",
        FIFF.FIFFV_COIL_VV_MAG_T3: "magnetometer",
        FIFF.FIFFV_COIL_MAGNES_MAG: "magnetometer",
        FIFF.FIFFV_COIL_QUSPIN_ZFOPM_MAG2: "magnetometer",
        FIFF.FIFFV_COIL_FIELDLINE_OPM_MAG_GEN1: "magnetometer",
        FIFF.FIFFV_COIL_CTF_GRAD: "axial",
        FIFF.FIFFV_COIL_KIT_GRAD: "axial",
        FIFF.FIFFV_COIL_ARTEMIS123_GRAD: "axial",
        FIFF.FIFFV_COIL_MAGNES_GRAD: "axial",
        FIFF.FIFFV_COIL_CTF_REF_MAG: "reference",
        FIFF.FIFFV_COIL_MAGNES_R_MAG: "reference",
        FIFF.FIFFV_COIL_KIT_REF_MAG: "reference",
        FIFF.FIFFV_COIL_EEG: None,
    }
    assert {k: coil_class(k) for k in expect} == expect


def test_eeg_without_positions_gets_the_montage_by_name() -> None:
    table, _ = _table("EDF/test_edf_overlapping_annotations.edf")  # names like "Fc5."
    assert table.summary() == {"EEG": 64, "MAG": 0, "GRAD": 0}
    assert set(table.pos_source) == {"montage:standard_1005"}
    _check_invariants(table)
    table, _ = _table("BDF/test_bdf_stim_channel.bdf")
    assert table.names == ["C3", "C4", "Cz"]
    assert [d.reason for d in table.dropped] == ["stim channel"]


def test_unplaceable_names_are_dropped_with_reasons() -> None:
    with pytest.raises(SkipRecording, match="no placeable EEG/MEG channels"):
        _table("Brainvision/test_NO.vhdr")  # channels named "1".."71": nothing to place
    with pytest.raises(SkipRecording, match="no placeable"):
        _table("EEGLAB/test_raw.set")  # "EEG 000"...
    with pytest.raises(SkipRecording, match="ecg"):
        _table("GDF/test_1ch.gdf")  # its only channel is named ECG


def test_electrodes_tsv_positions_come_before_the_montage() -> None:
    with open_raw(str(meeg_file("EEGLAB/test_raw.set"))) as opened:
        info = opened.raw.info
    electrodes = {n: (0.01 * (i + 1), 0.02, 0.05) for i, n in enumerate(info["ch_names"][:30])}
    table = build_sensor_table(info, electrodes=electrodes)
    assert len(table) == 30 and set(table.pos_source) == {"electrodes.tsv"}
    np.testing.assert_allclose(table.pos[0], [0.01, 0.02, 0.05], rtol=1e-6)
    assert sum("without a position" in d.reason for d in table.dropped) == 2


def test_bids_channel_types_override_the_file() -> None:
    table, info = _table("CNT/scan41_short.cnt", channel_types={"1": "EOG", "2": "MISC"})
    assert "1" not in table.names and "2" not in table.names
    reasons = {d.name: d.reason for d in table.dropped}
    assert reasons["1"] == "eog channel (channels.tsv type EOG)"
    with open_raw(str(meeg_file("SSS/sample_audvis_trunc_raw_sss.fif"))) as opened:
        table = build_sensor_table(opened.raw.info, channel_types={"MEG 0113": "MEGREFMAG"})
    assert "MEG 0113" not in table.names


def test_too_few_channels_is_a_skip_and_min_is_configurable() -> None:
    with pytest.raises(SkipRecording, match="only 1 placed EEG channel"):
        _table("misc/sample_invalid_birthday_raw.fif")
    table, _ = _table("misc/sample_invalid_birthday_raw.fif", min_channels=1)
    assert table.names == ["EEG 001"] and table.pos_source == ["file"]
    with pytest.raises(ValueError, match="min_channels"):
        _table("misc/sample_invalid_birthday_raw.fif", min_channels=0)


def test_synthetic_tuh_info_and_exclusions() -> None:
    import mne

    names = [
        "EEG FP1-REF",
        "EEG FP2-REF",
        "EEG T3-LE",
        "EEG A1-REF",
        "EEG 001",
        "EEG EKG1-REF",
        "EEG T1-REF",
    ]
    info = mne.create_info(names, 256.0, "eeg")
    table = build_sensor_table(info, exclude=["EEG FP2-REF"])
    assert table.names == ["EEG FP1-REF", "EEG T3-LE", "EEG A1-REF"]
    reasons = {d.name: d.reason for d in table.dropped}
    assert reasons["EEG FP2-REF"] == "excluded by configuration"
    assert reasons["EEG EKG1-REF"] == "ecg channel (by its name)"
    assert "not a standard_1005 label" in reasons["EEG 001"]
    assert "not a standard_1005 label" in reasons["EEG T1-REF"]


def test_sensor_table_json_round_trips() -> None:
    table, _ = _table("CTF/testdata_ctf_short_discontinuous.ds")
    doc = json.loads(json.dumps(sensor_table_json(table)))
    assert doc["summary"] == {"EEG": 8, "MAG": 0, "GRAD": 273}
    assert doc["n_channels"] == 281 and len(doc["channels"]) == 281
    assert {c["type"] for c in doc["channels"]} == {"EEG", "GRAD"}
    assert len(doc["dropped"]) == 75
