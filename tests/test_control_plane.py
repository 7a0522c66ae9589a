"""The control plane grows linearly: every driver-side step at 1/200 and 1/100 of the
internet scale (1,000 and 2,000 recordings; see ``tests/benchmarks/control_plane.py``).

Growth is measured in Python function calls (cProfile's count), not seconds: the count is
deterministic for given inputs, so the test does not depend on the machine or its load. A
quadratic step doubles its per-item work when the input doubles (ratio ~4); a linear one
stays at ~2 (fixed costs make it lower).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "benchmarks"))

import control_plane as cp  # noqa: E402


def _counts(n: int, work: str) -> tuple[dict[str, int], dict]:
    calls: dict[str, int] = {}

    def timer(name, fn):
        prof = cProfile.Profile()
        out = prof.runcall(fn)
        calls[name] = pstats.Stats(prof).total_calls
        return out

    info = cp.run_all(n, work, world=64, timer=timer, segment_rows=330)
    return calls, info


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("control-plane")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINOMNI_CRAWL_PROCS", "1")  # crawl in this process: every call counted
        return _counts(1000, str(root / "a")), _counts(2000, str(root / "b"))


def test_every_step_is_linear(scaled):
    (small, info_s), (big, info_b) = scaled
    assert info_b["recordings"] == 2 * info_s["recordings"] == 2000
    assert info_b["ledger_rows"] == 2000 and info_b["windows"] == 20000
    # the rows received (99 % of them: the rest are an earlier driver's parts), by 330
    assert (info_s["ledger_segments"], info_b["ledger_segments"]) == (3, 6)
    assert set(small) == set(big)
    ratios = {k: big[k] / small[k] for k in small}
    assert all(r <= 2.25 for r in ratios.values()), ratios


def test_steps_see_all_the_work(scaled):
    """The generated corpus flows through every step: nothing is dropped on the way."""
    _, (_, info) = scaled
    assert info["tasks"] == info["recordings"]  # nothing done yet: every recording to run
    assert info["leakage"]["ok"] and info["leakage"]["entries"] == info["recordings"]
    assert info["subjects"] == info["leakage"]["subjects"] == 500
    assert info["loader_samples_per_epoch"] > 0
    assert info["diff_lines"] >= 1  # the second version's changed shards are reported


def test_entities_parser_equals_mne_bids():
    from mne_bids import get_entities_from_fname

    from brainomni.sources.bids import entities_from_fname

    names = [
        "sub-01_ses-02_task-rest_run-1_eeg.vhdr",
        "sub-01_task-rest_split-01_meg.fif",
        "task-rest_eeg.json",
        "sub-01_ses-1_space-CapTrak_electrodes.tsv",
        "weird_file.txt",
        "sub-01_desc-x_acq-ecog_ieeg.edf",
        "sub-01_recording-eye1_physio.tsv.gz",
        "sub-A1_task-a-b_run-3_meg.ds",
        "sub-01_tracksys-x_foo-bar_eeg.set",
    ]
    for n in names:
        want = {k: v for k, v in get_entities_from_fname(n, on_error="ignore").items() if v}
        assert entities_from_fname(n) == want, n


def test_parallel_crawl_equals_serial(tmp_path, monkeypatch):
    """Sources crawled by a process pool give the same frozen list as one by one."""
    from brainomni.ingest.plan import crawl_all
    from brainomni.sources import Source

    cp.GeneratedBIDS.configure(800)
    sources = [
        Source(url=f"genbids://gen{k:05d}", kind="bids", name=f"gen{k:05d}", version="1.0.0")
        for k in range(4)
    ]
    monkeypatch.setenv("BRAINOMNI_CRAWL_PROCS", "2")
    pooled = crawl_all(sources)
    monkeypatch.setenv("BRAINOMNI_CRAWL_PROCS", "1")
    serial = crawl_all(sources)
    assert [r.recordings for r in pooled] == [r.recordings for r in serial]
    assert sum(len(r.recordings) for r in pooled) == 800


def test_frozen_list_of_the_pool_equals_the_serial_one(tmp_path, monkeypatch):
    """Sources crawled by the pool (given out of order, with a limit): the frozen table
    equals the one built from the frozen refs, its ids are the tasks' ids (computed once
    and reused), and a serial crawl freezes the same list."""
    import pyarrow.parquet as pq

    from brainomni.ingest.plan import plan
    from brainomni.signal.config import DEFAULT_CONFIG
    from brainomni.sources import Source, recordings_table

    cp.GeneratedBIDS.configure(600)
    sources = [
        Source(url=f"genbids://gen{k:05d}", kind="bids", name=f"gen{k:05d}", version="1.0.0")
        for k in (3, 1, 2, 0)
    ]
    monkeypatch.setenv("BRAINOMNI_CRAWL_PROCS", "2")
    got = plan(sources, str(tmp_path / "a"), config=DEFAULT_CONFIG, limit=500)
    assert len(got.recordings) == len(got.tasks) == 500
    keys = [(r.dataset, r.relpath) for r in got.recordings]
    assert keys == sorted(keys) and keys[0][0] == "gen00000" and keys[-1][0] == "gen00003"
    frozen = pq.read_table(tmp_path / "a" / "crawl" / "recordings.parquet")
    assert frozen.equals(recordings_table(got.recordings))
    assert [t.ref.recording_id for t in got.tasks] == frozen.column("recording_id").to_pylist()
    monkeypatch.setenv("BRAINOMNI_CRAWL_PROCS", "1")
    again = plan(sources, str(tmp_path / "b"), config=DEFAULT_CONFIG, limit=500)
    assert again.fingerprint == got.fingerprint and again.recordings == got.recordings


def test_pack_plan_dict_equals_asdict():
    """The plan's recording dicts (built field by field, no deep copy) equal ``asdict``, and
    the plan survives its JSON form with the same hash."""
    import dataclasses
    import json

    from brainomni.pack.plan import PackPlan, plan_from_infos
    from brainomni.records import RecordingRef
    from brainomni.splits import SplitConfig

    refs = [
        RecordingRef(uri=f"/d/{i}", dataset="ds", relpath=f"sub-{i // 4}/r{i}", subject=str(i))
        for i in range(40)
    ]
    infos = cp.pack_infos(cp.Shape(40), refs)
    split_config = SplitConfig(unseen_datasets=(), excluded_datasets=(), namespaces=())
    plan = plan_from_infos(infos, cp.pack_config(10, infos), split_config)
    assert plan.to_dict()["recordings"] == [dataclasses.asdict(r) for r in plan.recordings]
    assert {r.split for r in plan.recordings} <= {"train", "val", "test"}
    again = PackPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.recordings == plan.recordings and again.hash == plan.hash


def test_arrow_dedupe_equals_python_dedupe():
    """The fold's vectorised dedupe (Arrow) keeps the same row per key as the row-by-row
    one, ties included (same attempt and time: the later row wins), in the same order."""
    import random

    from brainomni.ingest.ledger import LedgerRow
    from brainomni.pipeline.ledger import dedupe, dedupe_table, rows_table, table_rows

    rnd = random.Random(7)
    rows = [
        LedgerRow(
            recording_id=f"r{rnd.randrange(60)}",
            uri=f"/u/{i}",  # tells the rows apart
            dataset=rnd.choice(["b", "a", ""]),
            relpath=f"p{rnd.randrange(5)}",
            attempt=rnd.randrange(1, 4),
            finished_at=rnd.choice(["", "2026-01-01", "2026-01-02"]),
        )
        for i in range(400)
    ]
    want = dedupe(rows)
    got = table_rows(dedupe_table(rows_table(rows, LedgerRow), LedgerRow), LedgerRow)
    assert [r.uri for r in got] == [r.uri for r in want]
    assert got == want and len(want) == len({r.recording_id for r in rows})
