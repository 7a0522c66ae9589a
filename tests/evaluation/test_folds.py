"""Cross-subject folds: the official rotation, official test sets, and no subject in two
parts."""

from __future__ import annotations

import pytest

from brainomni.evaluation.folds import PAPER_SEEDS, Fold, folds_for, subject_folds
from tests.evaluation.synthetic import planted_set

SUBJECTS = [f"ds/sub-{i:02d}" for i in range(13)]


@pytest.mark.parametrize("seed", PAPER_SEEDS)
def test_five_folds_rotate_and_never_share_a_subject(seed):
    folds = subject_folds(SUBJECTS * 3, k=5, seed=seed)  # repeated windows of each subject
    assert len(folds) == 5
    tested = []
    for f in folds:
        parts = [set(f.train), set(f.val), set(f.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert parts[0] | parts[1] | parts[2] == set(SUBJECTS)
        tested += f.test
    assert sorted(tested) == sorted(SUBJECTS)  # each subject is tested exactly once
    # fold i validates on the group fold i+1 tests on (the official 3 / 1 / 1 rotation)
    for i, f in enumerate(folds):
        assert f.val == folds[(i + 1) % 5].test
        assert len(f.train) == len(SUBJECTS) - len(f.val) - len(f.test)


def test_seeds_give_other_groups_and_a_seed_is_reproducible():
    a, b = subject_folds(SUBJECTS, seed=42), subject_folds(SUBJECTS, seed=3407)
    assert [f.test for f in a] != [f.test for f in b]
    assert subject_folds(SUBJECTS, seed=42) == a


def test_official_test_subjects_are_every_folds_test_set():
    official = SUBJECTS[:3]
    folds = subject_folds(SUBJECTS, k=5, seed=42, test_subjects=official)
    rest = set(SUBJECTS) - set(official)
    vals = []
    for f in folds:
        assert f.test == tuple(official)
        assert set(f.train) | set(f.val) == rest and not set(f.train) & set(f.val)
        vals += f.val
    assert sorted(vals) == sorted(rest)


def test_folds_of_a_set_and_window_indices_follow_subjects():
    ws = planted_set(n_subjects=6, per_class=1)
    # the key build_labelled_set writes for official splits (TUAB/TUEV); an eval subject
    # without windows is not a test subject
    ws.meta["official_split"] = {"synth/sub-00": "eval", "synth/sub-01": "train", "gone": "eval"}
    folds = folds_for(ws, k=3, seed=42)
    for f in folds:
        tr, va, te = f.indices(ws)
        assert {ws.windows[i].subject for i in te} == {"synth/sub-00"}
        assert {ws.windows[i].subject for i in va} == set(f.val)
        assert len(tr) + len(va) + len(te) == len(ws)


def test_bad_fold_requests_raise_value_errors_that_say_what_to_do():
    with pytest.raises(ValueError, match="lower --folds"):
        subject_folds(SUBJECTS[:4], k=5)
    with pytest.raises(ValueError, match="no windows"):
        subject_folds(SUBJECTS, test_subjects=["other/sub-1"])
    ws = planted_set(n_subjects=4, per_class=1)
    ws.meta["official_split"] = {"synth/sub-00": "test"}
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        folds_for(ws, k=2)
    ws.meta["official_split"] = {"synth/sub-00": "train", "gone": "eval"}
    with pytest.raises(ValueError, match="no 'eval' subject has windows"):
        folds_for(ws, k=2)
    with pytest.raises(ValueError, match="disjoint"):
        Fold(0, 42, ("a", "b"), ("b",), ("c",))
