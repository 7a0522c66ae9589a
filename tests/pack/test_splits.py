"""Subject-level splits: deterministic, by subject, unseen/excluded, leakage check."""

from __future__ import annotations

import pytest

from brainomni.splits import (
    Assignment,
    LeakageError,
    SplitConfig,
    assign_split,
    check_leakage,
)


def _subjects(n=4000):
    return [(f"ds00{i % 7:04d}", f"sub{i:05d}") for i in range(n)]


def test_identical_across_runs_and_by_subject():
    cfg = SplitConfig()
    a = [assign_split(d, s, cfg) for d, s in _subjects()]
    b = [assign_split(d, s, SplitConfig()) for d, s in _subjects()]
    assert a == b
    frac = {k: a.count(k) / len(a) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.85) < 0.03 and abs(frac["val"] - 0.10) < 0.02
    assert abs(frac["test"] - 0.05) < 0.015
    other = [assign_split(d, s, SplitConfig(key="another")) for d, s in _subjects()]
    assert other != a  # the key matters
    # every recording of a subject lands in one split: no subject in two splits
    recs = [
        Assignment(assign_split(d, s, cfg), d, s, f"{d}-{s}-{r}")
        for d, s in _subjects(500)
        for r in range(3)
    ]
    assert check_leakage(recs, cfg)["ok"]


def test_unseen_excluded_and_namespaces():
    cfg = SplitConfig()
    assert assign_split("ds005261", "01", cfg) == "unseen-ds005261"
    assert assign_split("ds005697-1.0.2", "01", cfg) == "unseen-ds005697"
    for ds in ("ds002778", "ds004504-1.0.8", "ds005234", "ds003568", "ds006035", "TUAB"):
        assert assign_split(ds, "01", cfg) is None
    subs = [f"NDAR{i:04d}" for i in range(200)]
    assert [assign_split("ds004186", s, cfg) for s in subs] == [
        assign_split("ds005510", s, cfg) for s in subs
    ]
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(fractions=(("train", 0.9), ("val", 0.2)))
    with pytest.raises(ValueError, match="subject"):
        assign_split("ds1", "", cfg)


def test_leakage_check_catches_planted_overlaps():
    cfg = SplitConfig()
    ok = [Assignment("train", "ds004148", "01", "r1"), Assignment("val", "ds004148", "02", "r2")]
    check_leakage(ok, cfg)
    cases = {
        "subject ds004148/01": ok + [Assignment("test", "ds004148", "01", "r3")],
        "recording r1": ok + [Assignment("val", "ds004148", "02", "r1")],
        "downstream data": ok + [Assignment("train", "ds002778", "01", "r9")],
        "unseen-device dataset": ok + [Assignment("train", "ds005697", "01", "r8")],
        "subject hbn/NDAR1": [
            Assignment("train", "ds004186", "NDAR1", "a"),
            Assignment("test", "ds005505", "NDAR1", "b"),
        ],
    }
    for needle, rows in cases.items():
        with pytest.raises(LeakageError, match=needle):
            check_leakage(rows, cfg)
    with pytest.raises(LeakageError, match="downstream"):
        check_leakage(ok, cfg, downstream_subjects=[("ds004148", "02")])


def test_remembered_splits_equal_fresh_ones_and_stay_out_of_copies():
    """assign_split remembers each (dataset, subject) on its config: the answers equal a
    fresh config's (computed afresh by the private function), and a copy of the config
    made through its state (what pickling for a worker uses) carries none of them."""
    import copy

    from brainomni.splits import _assign

    cfg = SplitConfig(unseen_datasets=("ds000003",), excluded_datasets=("ds000004",))
    subjects = _subjects(700)
    first = [assign_split(d, s, cfg) for d, s in subjects]
    again = [assign_split(d, s, cfg) for d, s in subjects]
    fresh = [_assign(d, s, cfg) for d, s in subjects]
    assert first == again == fresh
    assert {"train", "val", "unseen-ds000003", None} <= set(first)
    assert len(cfg._split_memo) == 700
    state = cfg.__getstate__()
    assert not [k for k in state if k.startswith("_")]
    back = copy.copy(cfg)  # __reduce_ex__ -> __getstate__, as pickle does
    assert back == cfg and "_split_memo" not in back.__dict__
    assert [assign_split(d, s, back) for d, s in subjects] == first
