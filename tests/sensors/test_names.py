"""EEG name normalisation and 10-05 matching, including TUH-style and vendor spellings."""

from __future__ import annotations

import numpy as np
import pytest

from brainomni.sensors import match_montage, non_eeg_kind, normalize_eeg_name, resolve_names


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("EEG FP1-REF", "Fp1"),
        ("EEG FP2-LE", "Fp2"),
        ("EEG T3-LE", "T7"),
        ("EEG T4-REF", "T8"),
        ("EEG T5-REF", "P7"),
        ("EEG T6-AR", "P8"),
        ("EEG A1-REF", "A1"),
        ("EEG FZ-REF", "Fz"),
        ("EEG FPZ-REF", "Fpz"),
        ("EEG FP1-A1A2", "Fp1"),
        ("FP1-A1A2", "Fp1"),
        ("C3-A2", "C3"),
        ("O1-M2", "O1"),
        ("FP1", "Fp1"),
        ("fp1", "Fp1"),
        ("Fp1", "Fp1"),
        ("FPZ", "Fpz"),
        ("Fc5.", "FC5"),
        ("Fcz.", "FCz"),
        ("POL Fp1", "Fp1"),
        ("EEG Cz", "Cz"),
        ("M1", "M1"),
        ("AFp1h", "AFp1h"),
        ("CPZ", "CPz"),
    ],
)
def test_vendor_spellings_resolve(name: str, label: str) -> None:
    assert normalize_eeg_name(name) == label


@pytest.mark.parametrize(
    "name", ["EEG 001", "EEG 26-REF", "EEG T1-REF", "Fp1-F7", "1", "LEFT_EAR", "", "E12"]
)
def test_unplaceable_names(name: str) -> None:
    assert normalize_eeg_name(name) is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("EEG EKG1-REF", "ecg"),
        ("ECG", "ecg"),
        ("VEOGR", "eog"),
        ("HEOG", "eog"),
        ("EEG ROC-REF", "eog"),
        ("E1-M2", "eog"),
        ("EMGright", "emg"),
        ("Status", "stim"),
        ("EEG PHOTIC-REF", "stim"),
        ("SpO2", "resp"),
        ("EEG FP1-REF", None),
        ("E1", None),
    ],
)
def test_non_eeg_by_name(name: str, kind: str | None) -> None:
    assert non_eeg_kind(name) == kind


def test_tuh_montage_resolves_with_montage_positions() -> None:
    tuh = [
        f"EEG {n}-REF"
        for n in [
            "FP1",
            "FP2",
            "F3",
            "F4",
            "C3",
            "C4",
            "P3",
            "P4",
            "O1",
            "O2",
            "F7",
            "F8",
            "T3",
            "T4",
            "T5",
            "T6",
            "A1",
            "A2",
            "FZ",
            "CZ",
            "PZ",
            "T1",
            "T2",
        ]
    ]
    matched = match_montage(tuh)
    assert len(matched) == 21  # T1/T2 are not 10-05 positions
    assert matched["EEG T3-REF"][0] == "T7" and matched["EEG T6-REF"][0] == "P8"
    xyz = np.array([v[1] for v in matched.values()])
    assert np.all(np.isfinite(xyz)) and np.all(np.linalg.norm(xyz, axis=1) > 0.05)
    _, unmatched = resolve_names(tuh)
    assert set(unmatched) == {"EEG T1-REF", "EEG T2-REF"}


def test_common_reference_is_stripped_but_bipolar_is_not() -> None:
    matched, _ = resolve_names(["Fp1-Cz", "C3-Cz", "O1-Cz"])
    assert matched == {"Fp1-Cz": "Fp1", "C3-Cz": "C3", "O1-Cz": "O1"}
    matched, unmatched = resolve_names(["Fp1-F7", "F7-T7", "T7-P7"])
    assert matched == {} and all("bipolar" in r for r in unmatched.values())


def test_duplicates_keep_the_first() -> None:
    matched, unmatched = resolve_names(["T3", "T7"])
    assert matched == {"T3": "T7"} and "same 10-05 position" in unmatched["T7"]


def test_biosemi_abc_names_are_not_mistaken_for_10_20() -> None:
    names = [f"{c}{i}" for c in "ABCD" for i in range(1, 33)]  # C3, A1... look like 10-20
    matched, unmatched = resolve_names(names)
    assert matched == {} and "BioSemi" in unmatched["C3"]
    # a plain 10-20 set with ear electrodes keeps A1/A2 as ears
    assert resolve_names(["A1", "A2", "C3", "C4"])[0] == {
        "A1": "A1",
        "A2": "A2",
        "C3": "C3",
        "C4": "C4",
    }
