"""Ledger, plan and summary logic, run with the serial executor (no Ray)."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from brainomni.ingest import (
    IngestJob,
    LedgerRow,
    PlanChanged,
    Progress,
    SerialExecutor,
    compact,
    dedupe,
    read_ledger,
    run_job,
    write_part,
)
from brainomni.ingest.ledger import ALREADY_DONE, PARTS_DIR
from brainomni.signal.config import CleanConfig
from tests.ingest.conftest import store_hashes


def _row(rid: str, attempt: int, outcome: str = "ok", at: str = "2024") -> LedgerRow:
    return LedgerRow(
        recording_id=rid, uri=f"/x/{rid}", outcome=outcome, attempt=attempt, finished_at=at
    )


def test_dedupe_latest_attempt_wins(tmp_path):
    rows = [
        _row("a", 1, "failed"),
        _row("a", 2, "ok"),
        _row("b", 1),
        _row("b", 1, "failed", "2025"),
    ]
    out = {r.recording_id: r for r in dedupe(rows)}
    assert out["a"].outcome == "ok" and out["a"].attempt == 2
    assert out["b"].outcome == "failed"  # same attempt: the later one
    dest = str(tmp_path / "d")
    for r in rows[:2]:
        write_part(dest, r)
    assert len(read_ledger(dest, raw=True)) == 2
    compact(dest)
    assert not list((tmp_path / "d" / PARTS_DIR).iterdir())
    # a part left behind by a kill after compaction, plus a newer attempt: still one row each
    write_part(dest, rows[0])
    write_part(dest, _row("a", 3, "skipped"))
    rows_now = compact(dest)
    assert [(r.recording_id, r.attempt, r.outcome) for r in rows_now] == [("a", 3, "skipped")]
    table = pq.read_table(tmp_path / "d" / "ledger.parquet")
    assert table.num_rows == 1


def test_progress_line():
    t = [0.0]
    lines: list[str] = []
    p = Progress(4, every_s=5, clock=lambda: t[0], emit=lines.append)
    t[0] = 2.0
    p.update(LedgerRow("a", "u", outcome="ok", output_hours=1.0))
    assert not lines  # not yet due
    t[0] = 10.0
    p.update(LedgerRow("b", "u", outcome="failed"))
    rec_s, hours_s, eta = p.rates()
    assert (
        rec_s == pytest.approx(0.2) and hours_s == pytest.approx(0.1) and eta == pytest.approx(10)
    )
    assert "2/4" in lines[-1] and "failed=1 ok=1" in lines[-1] and "ETA 0:00:10" in lines[-1]


def test_serial_job_resumes_and_refuses_changed_list(tuh_v1_corpus, tmp_path):
    tree = tmp_path / "tuh"
    shutil.copytree(tuh_v1_corpus.root, tree)
    source = tuh_v1_corpus.source(str(tree))
    dest = str(tmp_path / "out")
    job = IngestJob(sources=(source,), dest=dest, progress_every_s=0)
    first = run_job(job, SerialExecutor())
    assert first["by_outcome"] == {"ok": 3}
    assert first["crawl_skipped_by_reason"]  # the misnamed EDF, counted with its reason
    assert first["hours_by"]["dataset"]["tuh_v1"] == pytest.approx(3 * 10 / 3600, rel=1e-3)
    hashes = store_hashes(dest)

    again = run_job(job, SerialExecutor())  # nothing to do: every row final
    assert again["run"]["ran"] == 0 and again["run"]["not_rerun"] == 3
    assert store_hashes(dest) == hashes

    # ledger lost but stores complete: the rerun finds them "already done", no recompute
    (tmp_path / "out" / "ledger.parquet").unlink()
    rerun = run_job(job, SerialExecutor())
    assert rerun["already_done"] == 3 and rerun["by_outcome"] == {"ok": 3}
    assert all(r.reason == ALREADY_DONE and r.output_hours > 0 for r in read_ledger(dest))
    assert store_hashes(dest) == hashes

    # a changed file changes the frozen list: refused, then redone with --recrawl
    edf = next(tree.rglob("00000258_s002.edf"))
    edf.write_bytes(next(tree.rglob("00000254_s005_t000.edf")).read_bytes())
    with pytest.raises(PlanChanged, match="1 changed"):
        run_job(job, SerialExecutor())
    with pytest.raises(PlanChanged, match="config hash"):
        run_job(
            IngestJob(sources=(source,), dest=dest, config=CleanConfig(l_freq=0.5)),
            SerialExecutor(),
        )
    redo = run_job(IngestJob(sources=(source,), dest=dest, recrawl=True), SerialExecutor())
    assert redo["run"]["ran"] == 1 and redo["by_outcome"] == {"ok": 3}
    rows = read_ledger(dest)
    assert len(rows) == 3 and sorted(r.attempt for r in rows) == [1, 1, 2]


def _entry_point():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("ingest_main", ROOT / "pipelines" / "ingest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_entry_point_catalog_and_help(tuh_v1_corpus, tuh_v2_corpus, tmp_path, capsys):
    mod = _entry_point()
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "--max-in-flight" in capsys.readouterr().out
    catalog = tmp_path / "corpus.toml"
    catalog.write_text(
        "".join(
            f'[[source]]\nname = "{c.name}"\nurl = "{c.root}"\nversion = "{c.version}"\n'
            'kind = "tuh"\nline_freq = 60\n\n'
            for c in (tuh_v1_corpus, tuh_v2_corpus)
        )
    )
    dest = tmp_path / "out"
    args = ["--catalog", str(catalog), "--dest", str(dest), "--executor", "serial"]
    assert mod.main([*args, "--limit", "4"]) == 0
    assert "recordings: 4  ok=4" in capsys.readouterr().out
    assert len(read_ledger(str(dest))) == 4
    assert mod.main([*args, "--limit", "5"]) == 2  # a different frozen list: refused
    assert mod.main([*args, "--recrawl"]) == 0
    assert len(read_ledger(str(dest))) == 6
