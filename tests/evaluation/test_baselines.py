"""The classical baseline (log band power + logistic regression); the CLI refusing bad sets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from brainomni.evaluation.baselines import BANDS, band_power_features, run_bandpower
from brainomni.evaluation.data import LabelledSet, Window
from brainomni.evaluation.finetune import cpu_test_finetune
from tests.evaluation.synthetic import SFREQ, planted_set


def test_band_power_matches_scipy_welch():
    ws = planted_set(n_subjects=2, per_class=1)
    feats = band_power_features(ws, sfreq=SFREQ)
    x = ws.windows[1].signal.astype(np.float64)
    f, pxx = welch(x, SFREQ, window="hamming", nperseg=256, noverlap=0, detrend="constant")
    ref = np.stack([pxx[:, (f >= lo) & (f < hi)].mean(1) for _, lo, hi in BANDS], 1)
    np.testing.assert_allclose(feats[1].reshape(-1, len(BANDS)), np.log10(ref), atol=1e-6)
    # the planted 12 Hz oscillation puts class 1's alpha band far above class 0's
    alpha = [i for i, b in enumerate(BANDS) if b[0] == "alpha"][0]
    planted = feats[ws.labels == 1].reshape(-1, 4, len(BANDS))[..., alpha].mean()
    rest = feats[ws.labels == 0].reshape(-1, 4, len(BANDS))[..., alpha].mean()
    assert planted > rest + 0.5


def test_mixed_channel_counts_use_per_type_means():
    ws = planted_set(n_subjects=2, per_class=1)
    w = ws.windows[0]
    meg = Window(w.signal[:3], w.sensors[:3], np.ones(3, np.int8), 0, "x/sub-9", "x/r")
    mixed = LabelledSet([*ws.windows, meg], ws.classes)
    feats = band_power_features(mixed, sfreq=SFREQ)
    assert feats.shape == (len(mixed), 3 * len(BANDS))
    assert np.all(feats[-1, : len(BANDS)] == 0) and np.all(
        feats[-1, len(BANDS) : 2 * len(BANDS)] != 0
    )


def test_bandpower_finds_the_planted_effect_and_not_shuffled_labels(tmp_path):
    cfg = cpu_test_finetune()
    good = run_bandpower(planted_set(), tmp_path / "a", cfg, sfreq=SFREQ)
    bacc = np.mean([u["test"]["balanced_accuracy"] for u in good["units"]])
    assert bacc >= 0.9
    assert (tmp_path / "a/units/bandpower").is_dir()
    bad = run_bandpower(planted_set(shuffle_labels=True), tmp_path / "b", cfg, sfreq=SFREQ)
    chance = np.mean([u["test"]["balanced_accuracy"] for u in bad["units"]])
    assert abs(chance - 0.5) <= 0.1


def test_cli_refuses_a_bad_set_naming_it(tmp_path):
    from brainomni.cli import main

    argv = ["finetune", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")]
    (tmp_path / "junk").mkdir()
    with pytest.raises(SystemExit, match="junk: no labelled_set.json"):
        main([*argv, "--set", str(tmp_path / "junk")])
    (tmp_path / "junk" / "labelled_set.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"junk.*labelled_set.json: not a JSON index"):
        main([*argv, "--set", str(tmp_path / "junk")])
    with pytest.raises(SystemExit, match="either --set DIR or --recipe"):
        main([*argv, "--set", str(tmp_path / "junk"), "--recipe", "planted", "--source", "x"])
    with pytest.raises(SystemExit, match="no data: give --set DIR"):
        main([*argv, "--recipe", "planted"])
    with pytest.raises(SystemExit, match="--recipe nosuch"):
        main([*argv, "--recipe", "nosuch", "--source", str(tmp_path)])
    # a source whose recordings yield no window: the message points to the ledger
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "dataset_description.json").write_text(
        '{"Name": "x", "BIDSVersion": "1.8.0"}'
    )
    src = [
        "--recipe",
        "planted",
        "--source",
        str(tmp_path / "bids"),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    with pytest.raises(SystemExit, match=r"no labelled window.*meta\['recordings'\]"):
        main([*argv, *src])
    # a good set: too few subjects for the protocol's folds, then a checkpoint that is no export
    from brainomni.evaluation.windows import save_labelled_set

    save_labelled_set(planted_set(n_subjects=3, per_class=1), str(tmp_path / "small"))
    with pytest.raises(SystemExit, match="lower --folds"):
        main([*argv, "--set", str(tmp_path / "small")])
    with pytest.raises(SystemExit, match="--checkpoint: .*brainomni export"):
        main([*argv, "--set", str(tmp_path / "small"), "folds=3"])
    assert not (tmp_path / "o").exists()
