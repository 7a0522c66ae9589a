"""Metrics against independent computations (numpy only), summaries and plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainomni.evaluation.metrics import (
    classification_metrics,
    confusion,
    plot_confusion,
    plot_roc,
    summarise,
)


def _bacc(y, pred, n):
    return np.mean([np.mean(pred[y == c] == c) for c in range(n) if (y == c).any()])


def _auroc(y, s):  # Mann-Whitney: P(score of a positive > score of a negative)
    pos, neg = s[y == 1], s[y == 0]
    return (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()


def _average_precision(y, s):  # mean precision at the rank of each positive (distinct scores)
    order = np.argsort(-s)
    hits = y[order] == 1
    prec = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return prec[hits].mean()


def _kappa(y, pred, n):
    cm = np.zeros((n, n))
    for a, b in zip(y, pred, strict=True):
        cm[a, b] += 1
    total = cm.sum()
    po = np.trace(cm) / total
    pe = (cm.sum(1) * cm.sum(0)).sum() / total**2
    return (po - pe) / (1 - pe)


def _weighted_f1(y, pred, n):
    f1s, w = [], []
    for c in range(n):
        tp = np.sum((pred == c) & (y == c))
        p = tp / max(np.sum(pred == c), 1)
        r = tp / max(np.sum(y == c), 1)
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
        w.append(np.sum(y == c))
    return np.average(f1s, weights=w)


def _probs(rng, y, n, signal):
    logits = rng.standard_normal((len(y), n))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_binary_metrics_match_independent_computations():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    y[:5] = 0
    p = _probs(rng, y, 2, 1.0)
    m = classification_metrics(y, p)
    pred = p.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(_bacc(y, pred, 2), abs=1e-12)
    assert m["auroc"] == pytest.approx(_auroc(y, p[:, 1]), abs=1e-12)
    assert m["auc_pr"] == pytest.approx(_average_precision(y, p[:, 1]), abs=1e-12)
    assert m["cohen_kappa"] == pytest.approx(_kappa(y, pred, 2), abs=1e-12)
    assert 0.6 < m["balanced_accuracy"] < 0.95  # a weak but real signal, not chance


def test_multiclass_metrics_match_independent_computations():
    rng = np.random.default_rng(2)
    y = rng.choice(4, 400, p=[0.5, 0.3, 0.15, 0.05])  # imbalanced, as TUEV
    p = _probs(rng, y, 4, 1.5)
    m = classification_metrics(y, p)
    pred = p.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(_bacc(y, pred, 4), abs=1e-12)
    assert m["cohen_kappa"] == pytest.approx(_kappa(y, pred, 4), abs=1e-12)
    assert m["weighted_f1"] == pytest.approx(_weighted_f1(y, pred, 4), abs=1e-12)
    assert "auroc" not in m


def test_a_single_class_test_set_gives_nan_auroc_not_an_error():
    m = classification_metrics(np.zeros(5, int), np.tile([0.7, 0.3], (5, 1)))
    assert math.isnan(m["auroc"]) and math.isnan(m["auc_pr"])
    assert m["balanced_accuracy"] == 1.0


def test_summary_is_numpy_mean_and_std_and_counts_undefined_runs():
    runs = [
        {"balanced_accuracy": v, "auroc": a} for v, a in ((0.7, 0.8), (0.9, math.nan), (0.8, 0.6))
    ]
    s = summarise(runs, ["balanced_accuracy", "auroc"])
    assert s["balanced_accuracy"]["mean"] == pytest.approx(0.8)
    assert s["balanced_accuracy"]["std"] == pytest.approx(np.std([0.7, 0.9, 0.8]))
    assert s["auroc"] == {
        "mean": pytest.approx(0.7),
        "std": pytest.approx(0.1),
        "runs": 2,
        "undefined": 1,
    }


def test_confusion_matrix_and_plots(tmp_path):
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    cm = confusion(y, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    a = plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png", "t")
    rng = np.random.default_rng(0)
    yb = rng.integers(0, 2, 50)
    b = plot_roc([("run", yb, rng.random(50))], tmp_path / "roc.png", "t")
    for f in (a, b):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
