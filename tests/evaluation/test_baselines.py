"""The classical baseline (log band power + logistic regression) and the labelled-set file."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from brainomni.evaluation.baselines import BANDS, band_power_features, run_bandpower
from brainomni.evaluation.data import LabelledSet, Window
from brainomni.evaluation.finetune import cpu_test_finetune
from brainomni.evaluation.setfile import load_set, save_set
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


def test_labelled_set_file_round_trip_and_refusals(tmp_path):
    ws = planted_set(n_subjects=2, per_class=2)
    ws.meta["test_subjects"] = ["synth/sub-01"]
    back = load_set(save_set(ws, tmp_path / "set.npz"))
    assert back.classes == ws.classes and back.meta == ws.meta and len(back) == len(ws)
    for a, b in zip(ws.windows, back.windows, strict=True):
        assert (a.label, a.subject, a.recording_id, a.onset_s) == (
            b.label,
            b.subject,
            b.recording_id,
            b.onset_s,
        )
        np.testing.assert_array_equal(a.signal, b.signal)
        np.testing.assert_array_equal(a.sensors, b.sensors)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_set(tmp_path / "junk.npz")
    z = dict(np.load(tmp_path / "set.npz"))
    z["channels"] = z["channels"] + 1  # sizes that disagree: refused before building
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(ValueError, match="disagree"):
        load_set(tmp_path / "bad.npz")


def test_cli_refuses_a_bad_set_file_naming_it(tmp_path):
    from brainomni.cli import main

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    argv = ["finetune", "--set", str(tmp_path / "junk.npz"), "--checkpoint", str(tmp_path)]
    with pytest.raises(SystemExit, match="junk.npz"):
        main([*argv, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
