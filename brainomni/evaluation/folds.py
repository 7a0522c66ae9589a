"""Cross-subject folds: no subject is ever in two of train / validation / test.

The official protocol (spec §5.2, ``dataset_spliter.py``): the subjects are shuffled with the
run's seed and cut into 5 groups; fold ``i`` tests on group ``i``, validates on group
``i + 1`` and trains on the other 3. Seeds 42 and 3407 give 10 runs.

Datasets with an official evaluation set (TUAB, TUEV) say so in ``LabelledSet.meta``:
``meta["official_split"] = {subject: "train" | "eval"}``, written by
:func:`brainomni.evaluation.windows.build_labelled_set` for recipes with
``split = "official"`` (one key for the data side and the fine-tuning side). Every fold then
tests on the ``eval`` subjects that have windows, and the remaining subjects are cut into
``k`` groups: fold ``i`` validates on group ``i`` and trains on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import LabelledSet

PAPER_SEEDS = (42, 3407)
OFFICIAL_SPLIT_KEY = "official_split"
OFFICIAL_TEST = "eval"
OFFICIAL_SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Fold:
    """The subjects of one fold (sorted tuples)."""

    index: int
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        a, b, c = set(self.train), set(self.val), set(self.test)
        if a & b or a & c or b & c or not (a and b and c):
            raise ValueError(
                f"fold {self.index} (seed {self.seed}): train/val/test subjects must be "
                f"non-empty and disjoint (shared: {sorted((a & b) | (a & c) | (b & c))[:5]})"
            )

    def indices(self, windows: LabelledSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window indices of train, val and test in ``windows``."""
        subj = windows.subjects
        return tuple(  # type: ignore[return-value]
            np.flatnonzero(np.isin(subj, np.asarray(part, dtype=subj.dtype)))
            for part in (self.train, self.val, self.test)
        )


def subject_folds(
    subjects: Sequence[str] | np.ndarray,
    *,
    k: int = 5,
    seed: int = 42,
    test_subjects: Sequence[str] | None = None,
) -> list[Fold]:
    """``k`` cross-subject folds of the unique ``subjects`` (see the module docstring).

    ``test_subjects``: an official test set; the other subjects are split into train and
    validation only.
    """
    uniq = sorted({str(s) for s in subjects})
    fixed = sorted({str(s) for s in test_subjects}) if test_subjects else []
    unknown = sorted(set(fixed) - set(uniq))
    if unknown:
        raise ValueError(f"official test subjects {unknown[:5]} have no windows in the set")
    pool = [s for s in uniq if s not in set(fixed)]
    if k < (2 if fixed else 3):
        raise ValueError(f"k={k}: use k >= 3 (k >= 2 with an official test set)")
    if len(pool) < k:
        raise ValueError(
            f"{len(pool)} subjects cannot make {k} subject folds; lower --folds or add subjects"
        )
    order = np.random.default_rng(seed).permutation(len(pool))
    groups = [tuple(sorted(pool[j] for j in g)) for g in np.array_split(order, k)]
    folds = []
    for i in range(k):
        if fixed:
            test, val = tuple(fixed), groups[i]
            train = [g for j, g in enumerate(groups) if j != i]
        else:
            test, val = groups[i], groups[(i + 1) % k]
            train = [g for j, g in enumerate(groups) if j not in (i, (i + 1) % k)]
        folds.append(Fold(i, seed, tuple(sorted(s for g in train for s in g)), val, test))
    return folds


def official_test_subjects(windows: LabelledSet) -> list[str] | None:
    """The ``eval`` subjects of ``meta["official_split"]`` that have windows in ``windows``;
    ``None`` when the set has no official split. ``ValueError`` naming the fix when the split
    is malformed or leaves no test subject."""
    split = windows.meta.get(OFFICIAL_SPLIT_KEY)
    if split is None:
        return None
    where = f"labelled set {windows.name!r}: meta[{OFFICIAL_SPLIT_KEY!r}]"
    if not isinstance(split, dict) or not all(
        isinstance(k, str) and v in OFFICIAL_SPLITS for k, v in split.items()
    ):
        raise ValueError(
            f"{where} must map subject -> 'train' or 'eval'; rebuild the set with "
            "build_labelled_set"
        )
    present = set(windows.subjects.tolist())
    test = sorted(s for s, v in split.items() if v == OFFICIAL_TEST and s in present)
    if not test:
        raise ValueError(
            f"{where}: no 'eval' subject has windows; the official evaluation set is empty "
            "(see the set's meta['recordings'] ledger for why its recordings were skipped)"
        )
    return test


def folds_for(windows: LabelledSet, *, k: int = 5, seed: int = 42) -> list[Fold]:
    """The folds of a labelled set: every fold tests on its official ``eval`` subjects when
    ``meta["official_split"]`` exists (:func:`official_test_subjects`)."""
    return subject_folds(
        windows.subjects, k=k, seed=seed, test_subjects=official_test_subjects(windows)
    )
