"""Downstream metrics per fold and their mean ± std over folds and seeds, with plots.

Computed with scikit-learn (spec §5.1: balanced accuracy is the primary metric; AUROC and
AUC-PR for binary tasks; Cohen's kappa and weighted F1 for multi-class ones).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BINARY = ("balanced_accuracy", "auroc", "auc_pr")
MULTICLASS = ("balanced_accuracy", "cohen_kappa", "weighted_f1")


def _sklearn():
    try:
        import sklearn.metrics as m
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("downstream metrics need scikit-learn: pip install scikit-learn") from exc
    return m


def metric_names(n_classes: int) -> tuple[str, ...]:
    return BINARY if n_classes == 2 else MULTICLASS


def classification_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Metrics of one evaluation: ``y_true`` (N,) int labels, ``prob`` (N, n_classes) class
    probabilities. Every metric of both families is returned; a metric that is undefined
    (AUROC with one class present) is NaN."""
    m = _sklearn()
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"prob {p.shape} does not match labels {y.shape}")
    n_cls = p.shape[1]
    pred = p.argmax(1)
    labels = np.arange(n_cls)
    present = np.unique(y)
    with warnings.catch_warnings():  # a one-class test set: NaN where undefined, no noise
        warnings.simplefilter("ignore", UserWarning)
        out = _scores(m, y, pred, labels)
    if n_cls == 2:
        ok = len(present) == 2
        out["auroc"] = float(m.roc_auc_score(y, p[:, 1])) if ok else math.nan
        out["auc_pr"] = float(m.average_precision_score(y, p[:, 1])) if ok else math.nan
    return out


def _scores(m, y: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        # over the classes present (sklearn's definition; an absent class has no recall)
        "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)),
        "cohen_kappa": float(m.cohen_kappa_score(y, pred, labels=labels)),
        "weighted_f1": float(
            m.f1_score(y, pred, labels=labels, average="weighted", zero_division=0)
        ),
        "accuracy": float((pred == y).mean()) if len(y) else math.nan,
        "n": int(len(y)),
    }


def summarise(runs: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, dict]:
    """Mean and standard deviation (numpy's default, ddof=0) of
    each metric over runs (folds x seeds); NaNs are left out and counted."""
    out = {}
    for k in names:
        v = np.asarray([r.get(k, math.nan) for r in runs], dtype=np.float64)
        ok = v[~np.isnan(v)]
        out[k] = {
            "mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std()) if ok.size else math.nan,
            "runs": int(ok.size),
            "undefined": int(v.size - ok.size),
        }
    return out


def confusion(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return _sklearn().confusion_matrix(y_true, pred, labels=np.arange(n_classes))


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (counts written in the cells) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.7 * n))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, title: str
) -> Path:
    """ROC curves of a binary task, one per run: ``(label, y_true, prob_positive)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = _sklearn()
    fig, ax = plt.subplots(figsize=(4, 4))
    for label, y, p in curves:
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = m.roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1, label=f"{label} ({m.roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
