"""Baselines under the same folds, so that a run shows what pretraining buys.

* ``random-init``: the same architecture from random initialisation, fine-tuned with the same
  protocol (:class:`brainomni.evaluation.finetune.Backbone` with ``init="random"``).
* ``bandpower``: a classical model: log band power per channel (Welch, MNE's
  ``psd_array_welch``) in the delta/theta/alpha/beta/gamma bands, standardised, then an
  L2 logistic regression (scikit-learn, class-balanced); its ``C`` is chosen on validation like
  the fine-tuning LR. Windows of different channel counts (several devices) cannot share
  per-channel features; their band powers are then averaged per sensor type (EEG, MAG, GRAD).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import LabelledSet
from .finetune import PREDICTIONS, RESULT, FinetuneConfig, _write_json, select_lr, set_hash
from .folds import folds_for
from .metrics import classification_metrics

log = logging.getLogger(__name__)

BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
)
C_GRID = (0.01, 0.1, 1.0, 10.0)
N_SENSOR_TYPES = 3


def band_power_features(
    windows: LabelledSet,
    *,
    sfreq: float = 256.0,
    bands: Sequence[tuple[str, float, float]] = BANDS,
) -> np.ndarray:
    """(N, C x bands) log10 band power per channel; with mixed channel counts (N, 3 x bands),
    the mean band power of each sensor type (0 where a window has none of that type)."""
    from mne.time_frequency import psd_array_welch

    T = windows.windows[0].signal.shape[1]
    n_fft = int(min(T, round(sfreq)))  # 1-s segments: 1 Hz resolution
    if bands[-1][2] >= sfreq / 2:
        raise ValueError(f"band {bands[-1]} reaches Nyquist ({sfreq / 2} Hz); lower its top")
    counts = {w.signal.shape[0] for w in windows.windows}

    def powers(x: np.ndarray) -> np.ndarray:  # (..., C, T) -> (..., C, bands)
        psd, freqs = psd_array_welch(
            x.astype(np.float64), sfreq, fmin=0.0, fmax=sfreq / 2, n_fft=n_fft, verbose="error"
        )
        out = [psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) for _, lo, hi in bands]
        return np.log10(np.stack(out, -1) + 1e-20)

    if len(counts) == 1:
        x = np.stack([w.signal for w in windows.windows])
        return powers(x).reshape(len(windows), -1)
    feats = np.zeros((len(windows), N_SENSOR_TYPES, len(bands)))
    for i, w in enumerate(windows.windows):
        p = powers(w.signal)
        for t in range(N_SENSOR_TYPES):
            sel = w.sensor_type == t
            if sel.any():
                feats[i, t] = p[sel].mean(0)
    return feats.reshape(len(windows), -1)


def _fit_predict(
    X_tr, y_tr, X_ev: list[np.ndarray], C: float, seed: int, n_cls: int
) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    clf.fit(X_tr, y_tr)
    outs = []
    for X in X_ev:
        p = clf.predict_proba(X)
        full = np.zeros((len(X), n_cls), np.float64)
        full[:, clf.classes_] = p  # classes absent from training get probability 0
        outs.append(full)
    return outs


def run_bandpower(
    windows: LabelledSet,
    out: str | Path,
    cfg: FinetuneConfig,
    *,
    sfreq: float = 256.0,
    c_grid: Sequence[float] = C_GRID,
    rank: int = 0,
) -> dict[str, Any]:
    """The band-power baseline on the folds of ``cfg`` (its seeds and fold count); ``C`` is
    chosen by mean validation balanced accuracy. Returns the model's entry for the report."""
    out = Path(out)
    X = band_power_features(windows, sfreq=sfreq)
    y = windows.labels
    n_cls = len(windows.classes)
    identity = {
        "model": "bandpower",
        "set_hash": set_hash(windows),
        "c_grid": [float(c) for c in c_grid],
    }
    units = []
    for seed in cfg.seeds:
        for fold in folds_for(windows, k=cfg.folds, seed=seed):
            tr, va, te = fold.indices(windows)
            for C in c_grid:
                p_val, p_test = _fit_predict(X[tr], y[tr], [X[va], X[te]], C, seed, n_cls)
                d = (
                    out
                    / "units"
                    / "bandpower"
                    / f"C-{C:g}"
                    / f"seed-{seed:05d}"
                    / f"fold-{fold.index:02d}"
                )
                rec = {
                    "lr": float(C),  # the hyper-parameter chosen on validation
                    "seed": seed,
                    "fold": fold.index,
                    "subjects": {"train": fold.train, "val": fold.val, "test": fold.test},
                    "windows": {"train": len(tr), "val": len(va), "test": len(te)},
                    "val": classification_metrics(y[va], p_val),
                    "test": classification_metrics(y[te], p_test),
                    "trainable_parameters": int(X.shape[1] * (n_cls if n_cls > 2 else 1)),
                    "identity": identity,
                    "dir": str(d),
                }
                if rank == 0:
                    d.mkdir(parents=True, exist_ok=True)
                    np.savez(
                        d / PREDICTIONS,
                        val_labels=y[va],
                        val_prob=p_val,
                        test_labels=y[te],
                        test_prob=p_test,
                    )
                    _write_json(d / RESULT, rec)
                units.append(rec)
    best, table = select_lr(units)
    return {
        "model": "bandpower",
        "identity": identity,
        "selection": {"by": "mean validation balanced accuracy", "C": best, "table": table},
        "units": [u for u in units if u["lr"] == best],
        "all_units": units,
    }
