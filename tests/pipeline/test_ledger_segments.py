"""Ledger segments: the driver folds received rows into segments during a run (their parts
removed), a killed driver's segments and parts are read back, and the end-of-run fold
leaves one compacted file equal to a run without segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from brainomni.pipeline import Ledger, Stage, StageRow, run_stage
from brainomni.pipeline.ledger import LEDGER_FILE, PARTS_DIR, part_name


@dataclass
class Count(Stage):
    """Unit ``k`` is ok with ``items=k``; unit 3 is bad input (a failed row)."""

    name: ClassVar[str] = "count"
    expected_errors: ClassVar[tuple] = (ValueError,)
    dest: str = ""
    n: int = 7

    def units(self):
        return [f"u{k:02d}" for k in range(self.n)]

    def key(self, unit):
        return unit

    def run_unit(self, unit, *, attempt, worker):
        k = int(unit[1:])
        if k == 3:
            raise ValueError("bad input: planted")
        return StageRow(unit, outcome="ok", items=k)


def _files(dest):
    folder = dest / PARTS_DIR
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return [n for n in names if n.startswith("part-")], [n for n in names if n.startswith("seg-")]


def _comparable(rows):
    return [(r.key, r.outcome, r.error_class, r.items, r.attempt) for r in rows]


def test_run_with_segments_equals_run_without(tmp_path):
    plain = run_stage(Count(dest=str(tmp_path / "a")), "local")
    observed = []
    stage = Count(dest=str(tmp_path / "b"))
    real = Ledger.flush

    def watch(self, rows):  # what is on disk right after each segment
        url = real(self, rows)
        observed.append((len(rows), _files(tmp_path / "b")))
        return url

    Ledger.flush = watch
    try:
        seg = run_stage(stage, "local", ledger_flush_rows=2)
    finally:
        Ledger.flush = real
    # 7 units, a segment per 2 received rows: 3 segments, and the last row's part stays
    assert [n for n, _ in observed] == [2, 2, 2]
    for i, (_, (parts, segments)) in enumerate(observed):
        assert len(segments) == i + 1 and parts == []  # each segment took its rows' parts
    assert _comparable(seg.rows) == _comparable(plain.rows)
    assert seg.summary["by_outcome"] == plain.summary["by_outcome"] == {"ok": 6, "failed": 1}
    assert _files(tmp_path / "b") == ([], [])  # the end fold removed segments and parts
    assert (tmp_path / "b" / LEDGER_FILE).exists()
    again = run_stage(Count(dest=str(tmp_path / "b")), "local", ledger_flush_rows=2)
    assert again.summary["run"]["ran"] == 1  # only the failed unit runs again
    assert [r.attempt for r in again.rows if r.key == "u03"] == [2]


def test_killed_driver_segments_and_parts_are_read_and_folded(tmp_path):
    """A driver killed after two segments and before its fold leaves segments and parts:
    the ledger reads them all (one row per key, the latest attempt), a rerun reuses them,
    and the fold removes them."""
    dest = tmp_path / "d"
    ledger = Ledger(str(dest), StageRow)
    rows = [StageRow(f"u{k:02d}", outcome="ok", items=k) for k in (0, 1, 2, 4, 5)]
    for r in rows:
        ledger.write(r)  # the workers' parts
    ledger.flush(rows[:2])
    ledger.flush(rows[2:4])
    newer = StageRow("u01", outcome="ok", items=99, attempt=2)
    ledger.write(newer)  # a later attempt, as a part only
    parts, segments = _files(dest)
    assert len(segments) == 2 and parts == sorted(
        part_name(r.key, r.attempt) for r in (*rows[4:], newer)
    )
    got = {r.key: (r.items, r.attempt) for r in Ledger(str(dest), StageRow).read()}
    assert got == {**{f"u{k:02d}": (k, 1) for k in (0, 1, 2, 4, 5)}, "u01": (99, 2)}
    raw = Ledger(str(dest), StageRow).read(raw=True)
    assert len(raw) == 6  # 4 rows in segments, 2 parts: nothing counted twice
    result = run_stage(Count(dest=str(dest), n=6), "local")
    assert result.summary["run"]["ran"] == 1  # u03 had no row; the 5 others stand
    assert result.summary["run"]["not_rerun"] == 5
    assert _files(dest) == ([], [])
    final = {r.key: (r.outcome, r.items, r.attempt) for r in result.rows}
    assert final["u01"] == ("ok", 99, 2) and final["u03"][0] == "failed"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_flush_skips_parts_that_were_never_written(where, tmp_path, request):
    """A worker that could not write its part (store unreachable) still has its row in the
    driver: the segment keeps it, and removing the missing part is not an error (local disk
    and an object store); the fold then leaves only the compacted file."""
    if where == "s3":
        server = request.getfixturevalue("s3_server")
        dest, so = f"{request.getfixturevalue('s3_bucket')}/d", server.storage_options
        fs = server.fs()
    else:
        dest, so, fs = str(tmp_path / "d"), {}, None
    ledger = Ledger(dest, StageRow, so)
    rows = [StageRow("a", outcome="ok"), StageRow("b", outcome="ok")]
    ledger.write(rows[0])
    ledger.flush(rows)
    ledger.write(StageRow("c", outcome="ok"))
    listed = (
        sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{dest}/{PARTS_DIR}", detail=False))
        if fs
        else sorted(p.name for p in (tmp_path / "d" / PARTS_DIR).iterdir())
    )
    assert [n[:4] for n in listed] == ["part", "seg-"] and listed[0] == part_name("c", 1)
    assert sorted(r.key for r in Ledger(dest, StageRow, so).read()) == ["a", "b", "c"]
    assert sorted(r.key for r in Ledger(dest, StageRow, so).compact()) == ["a", "b", "c"]
    if fs:
        fs.invalidate_cache()
        assert not fs.exists(f"{dest}/{PARTS_DIR}") or not fs.ls(f"{dest}/{PARTS_DIR}")
    else:
        assert _files(tmp_path / "d") == ([], [])


def test_parts_are_arrow_ipc_and_parquet_parts_of_earlier_versions_are_read(tmp_path):
    """Parts are one-row Arrow IPC streams; a Parquet part left by an earlier version is
    read alike, and a damaged part of either kind is a ValueError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from brainomni.pipeline.ledger import rows_table

    dest = tmp_path / "d"
    ledger = Ledger(str(dest), StageRow)
    url = ledger.write(StageRow("new", outcome="ok", items=1))
    assert url.endswith(".arrow")
    table = pa.ipc.open_stream(
        pa.BufferReader((dest / PARTS_DIR / part_name("new", 1)).read_bytes())
    ).read_all()
    assert table.column("key").to_pylist() == ["new"]
    old = rows_table([StageRow("old", outcome="skipped", reason="too short")], StageRow)
    pq.write_table(old, dest / PARTS_DIR / "part-old-0001.parquet")
    got = {r.key: r.outcome for r in Ledger(str(dest), StageRow).read()}
    assert got == {"new": "ok", "old": "skipped"}
    for name in ("part-junk-0001.arrow", "part-junk-0001.parquet"):
        bad = dest / PARTS_DIR / name
        bad.write_bytes(b"not a table")
        with pytest.raises(ValueError, match=f"{name} is not a readable"):
            Ledger(str(dest), StageRow).read()
        bad.unlink()


def test_fold_after_flushes_equals_a_fold_of_everything(tmp_path):
    """Folding after flushes, given only the rows no segment holds (as run_stage does), or
    given every row (those in segments are then converted twice), equals the rows."""
    rows = [StageRow(f"u{k:02d}", outcome="ok", items=k) for k in range(9)]
    folded = {}
    for how, given in (("tail", rows[8:]), ("every row", rows)):
        dest = tmp_path / how.replace(" ", "-")
        ledger = Ledger(str(dest), StageRow)
        for r in rows:
            ledger.write(r)
        ledger.flush(rows[:4])
        ledger.flush(rows[4:8])
        folded[how] = _comparable(Ledger(str(dest), StageRow).compact(given))
        assert _files(dest) == ([], [])
    assert folded["tail"] == folded["every row"] == _comparable(rows)
    # received rows that are not the flushed objects (equal keys and attempts): all are
    # converted, and on a tie the received row (after the segments) wins, as before
    dest = tmp_path / "other"
    ledger = Ledger(str(dest), StageRow)
    ledger.flush(rows[:4])
    copies = [StageRow(r.key, outcome="ok", items=r.items + 100) for r in rows]
    got = {r.key: r.items for r in ledger.compact(copies)}
    assert got == {r.key: r.items + 100 for r in rows}
