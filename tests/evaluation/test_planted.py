"""The planted-effect dataset: real backgrounds (EEG and MEG), BIDS with events.tsv, built
through the same path as real data; learnable across subjects, chance when shuffled."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from brainomni.evaluation.planted import (
    band_power_check,
    band_power_features,
    build_planted_bids,
)
from brainomni.evaluation.recipes import get_recipe
from brainomni.evaluation.windows import build_labelled_set
from brainomni.records import EEG, MAG
from brainomni.signal.config import DEFAULT_CONFIG


@pytest.fixture(scope="module")
def planted(tmp_path_factory, meeg_dir):
    root = tmp_path_factory.mktemp("planted")
    subjects = build_planted_bids(
        str(root / "bids"), n_subjects=6, seed=1, n_events=10, data_root=str(meeg_dir)
    )
    recipe = get_recipe("planted")
    ls = build_labelled_set(recipe, str(root / "bids"), work_dir=str(root / "work"))
    return root, subjects, recipe, ls


def test_planted_set_goes_through_the_real_path(planted):
    root, subjects, recipe, ls = planted
    assert ls.meta["outcomes"] == {"ok": 6} and ls.meta["source_kind"] == "bids"
    assert ls.meta["clean_config_hash"] == DEFAULT_CONFIG.hash
    assert ls.meta["recipe_hash"] == recipe.hash
    assert len(ls) == 6 * 10 and ls.counts() == {"alpha10": 30, "beta20": 30}
    assert {s.modality for s in subjects} == {"eeg", "meg"}
    types = {int(t) for w in ls.windows for t in np.unique(w.sensor_type)}
    assert {EEG, MAG} <= types  # an EEG and a MEG geometry
    assert sorted(set(ls.subjects)) == [f"planted/{s.subject}" for s in subjects]


def test_planted_windows_start_at_the_events(planted):
    root, subjects, _, ls = planted
    for s in subjects:
        tsv = next((root / "bids" / f"sub-{s.subject}").rglob("*_events.tsv"))
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        exp = sorted((round(float(r["onset"]) * 256), r["trial_type"]) for r in rows)
        got = sorted(
            (round(w.onset_s * 256), ls.classes[w.label])
            for w in ls.windows
            if w.subject == f"planted/{s.subject}"
        )
        assert got == exp


def test_planted_is_learnable_and_shuffled_labels_are_not(planted):
    *_, ls = planted
    x = band_power_features(ls)
    assert band_power_check(ls, folds=3, features=x) >= 0.9
    shuffled = [band_power_check(ls, folds=3, shuffle=True, seed=s, features=x) for s in range(20)]
    assert 0.3 <= float(np.mean(shuffled)) <= 0.7


def test_planted_round_trip_with_mixed_devices(planted, tmp_path):
    """EEG (17 channels) and MEG (24) windows in one saved set come back equal."""
    from brainomni.evaluation.windows import load_labelled_set, save_labelled_set

    *_, ls = planted
    assert len({w.signal.shape[0] for w in ls.windows}) == 2
    save_labelled_set(ls, str(tmp_path / "s"))
    back = load_labelled_set(str(tmp_path / "s"))
    assert back.meta == ls.meta and back.classes == ls.classes
    for a, b in zip(ls.windows, back.windows, strict=True):
        assert (a.label, a.subject, a.onset_s) == (b.label, b.subject, b.onset_s)
        np.testing.assert_array_equal(a.signal, b.signal)
        np.testing.assert_array_equal(a.sensors, b.sensors)
