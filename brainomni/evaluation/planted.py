"""A planted-effect downstream dataset on real recordings: known answer, same path as real data.

:func:`build_planted_bids` writes a small BIDS dataset (mne-bids, with ``events.tsv``) whose
subjects are real backgrounds from the shared recordings (``../shared/data/meeg``) with a
class-dependent oscillation planted on a subset of sensors: class ``alpha10`` a 10 Hz burst,
class ``beta20`` a 20 Hz burst, ``burst_s`` long from each event onset. Subjects differ by
device (EEG: the 64-channel EDF+ recording of PhysioNet eegmmidb, 17 of its 10-10 channels;
MEG: the 102 magnetometers of the Neuromag sample recording, 24 of them), by the
background segment drawn, by the planted gain and by added white noise. The recipe
``planted`` of ``manifests/downstream.toml`` turns it into a :class:`LabelledSet` through
:func:`brainomni.evaluation.windows.build_labelled_set`, like any real dataset.

:func:`band_power_check` is the quick learnability check (log band power + logistic
regression, folds by subject), with a label-shuffled control that must stay at chance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

EEG_FILE = "EDF/test_edf_overlapping_annotations.edf"
MEG_FILE = "SSS/sample_audvis_trunc_raw_sss.fif"
EEG_CHANNELS = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8")
EEG_CHANNELS += ("P3", "Pz", "P4", "O1", "O2")
EEG_PLANTED = ("P3", "Pz", "P4", "O1", "O2")
N_MEG = 24
N_MEG_PLANTED = 8
FREQS = {"alpha10": 10.0, "beta20": 20.0}
CLASSES = tuple(FREQS)


# The planted set the fine-tuning tests use (tests/evaluation/test_planted.py): a tiny
# BrainOmni whose tokenizer is random (no pretraining) needs a stronger effect than the
# band-power check does; at the default gain U(0.8, 1.5) its random codes carry too little of
# the 10 vs 20 Hz difference and it stays at chance. Measured with cpu-test-finetune on 3
# subject folds: gain U(3, 5) x 9 subjects x 10 events .83/.90/1.0; U(4, 6) x 9 x 12:
# .97/.97/.97 (README "Downstream evaluation").
FINETUNE_PRESET: dict[str, Any] = {"n_subjects": 9, "n_events": 12, "gain": (4.0, 6.0)}


@dataclass(frozen=True)
class PlantedSubject:
    subject: str
    modality: str  # "eeg" or "meg"
    gain: float  # planted amplitude / background std of each planted channel
    noise: float  # added white noise std / background std
    n_events: int
    planted_channels: tuple[str, ...]


def _data_root(data_root: str | None) -> str:
    root = data_root or os.path.join("..", "shared", "data", "meeg")
    if not os.path.isfile(os.path.join(root, EEG_FILE)) or not os.path.isfile(
        os.path.join(root, MEG_FILE)
    ):
        raise FileNotFoundError(
            f"the shared recordings ({EEG_FILE}, {MEG_FILE}) are not under {root}: pass "
            "data_root=<folder of the MNE testing recordings>"
        )
    return root


def _eeg_background(root: str, rng: np.random.Generator, seconds: float):
    import mne

    raw = mne.io.read_raw_edf(os.path.join(root, EEG_FILE), preload=True, verbose="error")
    raw.rename_channels(lambda n: n.rstrip("."))
    lower = {n.lower(): n for n in raw.ch_names}
    raw.pick([lower[c.lower()] for c in EEG_CHANNELS])
    raw.rename_channels({lower[c.lower()]: c for c in EEG_CHANNELS})
    sf = raw.info["sfreq"]
    n = int(round(seconds * sf))
    start = int(rng.integers(0, raw.n_times - n))  # a different real segment per subject
    data = raw.get_data()[:, start : start + n]
    info = mne.create_info(list(raw.ch_names), sf, "eeg")
    out = mne.io.RawArray(data, info, verbose="error")
    out.set_montage("standard_1005", verbose="error")
    return out, EEG_PLANTED


def _meg_background(root: str, rng: np.random.Generator, seconds: float):
    """The magnetometers of a real 1-s Neuromag recording, tiled to ``seconds`` from random
    crops (random start, sign and direction): real sensor geometry and real spectra."""
    import mne

    raw = mne.io.read_raw_fif(os.path.join(root, MEG_FILE), preload=True, verbose="error")
    raw.pick("mag")
    picks = np.sort(rng.choice(len(raw.ch_names), N_MEG, replace=False))
    raw.pick([raw.ch_names[i] for i in picks])
    x = raw.get_data()
    sf = raw.info["sfreq"]
    n = int(round(seconds * sf))
    piece = x.shape[1] // 2
    parts, got = [], 0
    while got < n:
        a = int(rng.integers(0, x.shape[1] - piece))
        seg = x[:, a : a + piece] * rng.choice([-1.0, 1.0])
        if rng.random() < 0.5:
            seg = seg[:, ::-1]
        seg = seg - seg.mean(axis=1, keepdims=True)
        parts.append(seg)
        got += piece
    data = np.concatenate(parts, axis=1)[:, :n]
    info = raw.info.copy()
    out = mne.io.RawArray(data, info, first_samp=0, verbose="error")
    # planted on the sensors nearest the back of the helmet (most negative y)
    ys = np.array([ch["loc"][1] for ch in info["chs"]])
    planted = tuple(info["ch_names"][i] for i in np.argsort(ys)[:N_MEG_PLANTED])
    return out, planted


def build_planted_bids(
    root: str,
    n_subjects: int = 8,
    *,
    seed: int = 0,
    n_events: int = 12,
    burst_s: float = 2.0,
    gap_s: tuple[float, float] = (0.6, 1.2),
    gain: tuple[float, float] = (0.8, 1.5),
    noise: tuple[float, float] = (0.0, 0.5),
    data_root: str | None = None,
    line_freq: float = 50.0,
) -> list[PlantedSubject]:
    """Write the planted dataset as BIDS under ``root``; one recording per subject.

    Subjects alternate EEG and MEG. Each holds ``n_events`` bursts (classes balanced,
    shuffled), one every ``burst_s`` + U(``gap_s``) seconds, as ``events.tsv`` rows
    (``trial_type`` = class name, ``duration`` = ``burst_s``). A burst on each planted channel
    is ``g * std(background channel) * sin(2 pi f t + phase)`` with a 0.1-s raised-cosine
    ramp, ``g`` ~ U(``gain``) per subject, ``f`` = 10 or 20 Hz (+-0.5 Hz jitter per burst) and
    a random phase per burst and channel; white noise of std ``U(noise) * std`` is added to
    every channel. Deterministic given ``seed``.
    """
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    if n_subjects < 2 or n_events < 2:
        raise ValueError("build_planted_bids needs at least 2 subjects and 2 events")
    src = _data_root(data_root)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_subjects):
        modality = "eeg" if k % 2 == 0 else "meg"
        labels = np.array([CLASSES[i % 2] for i in range(n_events)])
        rng.shuffle(labels)
        gaps = rng.uniform(*gap_s, size=n_events)
        onsets = 1.0 + np.concatenate([[0.0], np.cumsum(burst_s + gaps)[:-1]])
        seconds = float(onsets[-1] + burst_s + 1.5)
        bg = _eeg_background if modality == "eeg" else _meg_background
        raw, planted = bg(src, rng, seconds)
        g, nz = float(rng.uniform(*gain)), float(rng.uniform(*noise))
        x = raw.get_data()
        sf = raw.info["sfreq"]
        std = x.std(axis=1, keepdims=True)
        x = x + rng.standard_normal(x.shape) * std * nz
        rows = [raw.ch_names.index(c) for c in planted]
        nb = int(round(burst_s * sf))
        t = np.arange(nb) / sf
        ramp = np.ones(nb)
        nr = int(0.1 * sf)
        ramp[:nr] = 0.5 - 0.5 * np.cos(np.pi * np.arange(nr) / nr)
        ramp[-nr:] = ramp[:nr][::-1]
        for onset, lab in zip(onsets, labels, strict=True):
            f = FREQS[str(lab)] + rng.uniform(-0.5, 0.5)
            a = int(round(onset * sf))
            for r in rows:
                ph = rng.uniform(0, 2 * np.pi)
                x[r, a : a + nb] += g * std[r, 0] * ramp * np.sin(2 * np.pi * f * t + ph)
        raw = mne.io.RawArray(x, raw.info, verbose="error")
        raw.info["line_freq"] = line_freq
        raw.set_annotations(
            mne.Annotations(onsets, burst_s, [str(v) for v in labels], orig_time=None)
        )
        sub = f"{k + 1:02d}"
        bp = BIDSPath(subject=sub, task="planted", datatype=modality, root=root)
        write_raw_bids(
            raw,
            bp,
            format="BrainVision" if modality == "eeg" else "FIF",
            allow_preload=True,
            overwrite=True,
            verbose="error",
        )
        out.append(PlantedSubject(sub, modality, g, nz, n_events, tuple(planted)))
    return out


def band_power_features(ls: Any) -> np.ndarray:
    """Per window: log mean power (over channels) in 8-12 Hz and 18-22 Hz, from the
    normalised window's periodogram. (N, 2) float64."""
    feats = []
    for w in ls.windows:
        x = np.asarray(w.signal, dtype=np.float64)
        sf = float(ls.meta.get("sfreq", 256.0))
        spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[1]), axis=1)) ** 2
        f = np.fft.rfftfreq(x.shape[1], 1 / sf)
        p = spec.mean(axis=0)
        feats.append([np.log(p[(f >= lo) & (f <= hi)].mean()) for lo, hi in ((8, 12), (18, 22))])
    return np.asarray(feats)


def band_power_check(
    ls: Any,
    *,
    folds: int = 4,
    shuffle: bool = False,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> float:
    """Balanced accuracy of log band power + logistic regression over subject folds (every
    window of a subject in one fold); ``shuffle`` permutes the labels first (the control).
    ``features``: :func:`band_power_features` of ``ls`` when already computed. Needs
    scikit-learn (declared with the downstream evaluation's fine-tuning dependencies)."""
    from ..errors import require

    require("sklearn", "train")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = band_power_features(ls) if features is None else features
    y, groups = ls.labels.copy(), ls.subjects
    if shuffle:
        y = np.random.default_rng(seed).permutation(y)
    pred = np.empty_like(y)
    for tr, te in GroupKFold(n_splits=folds).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression())
        pred[te] = model.fit(x[tr], y[tr]).predict(x[te])
    return float(balanced_accuracy_score(y, pred))
