"""The stage core: the ~30-line QC-report stage runs unchanged under the local and the Ray
executor (same outputs, ledger, resume, summary), and the core's rows for a transient error
(retried), bad input, a bug and a dead worker. One Ray session for the module (2 CPUs)."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from brainomni.ingest import IngestJob, run_job
from brainomni.io.retry import RetryPolicy
from brainomni.pipeline import (
    Ledger,
    LocalExecutor,
    Stage,
    StageRow,
    executor_name,
    get_executor,
    run_stage,
)
from brainomni.pipeline.qc_report import QCReportStage
from brainomni.pipeline.ray import RayExecutor

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another module's session: use it, leave it running
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tuh_v1_corpus, tmp_path_factory) -> str:
    """An ingest destination: 3 ok TUH recordings (and the crawl's skipped one)."""
    dest = str(tmp_path_factory.mktemp("qc") / "ingest")
    summary = run_job(IngestJob(sources=(tuh_v1_corpus.source(),), dest=dest), "local")
    assert summary["by_outcome"] == {"ok": 3}
    return dest


def _expected(store: Path, seconds: float) -> dict:
    """The report of one store, computed independently (zarr directly, np.std per channel)."""
    import zarr

    g = zarr.open_group(str(store), mode="r")
    n = int(seconds * g.attrs["sfreq"])
    x = np.asarray(g["signal"][:, :n], dtype=np.float64)
    std = x.std(axis=1)
    types = np.asarray(g["sensor_type"][:])
    assert set(types.tolist()) == {0}  # EEG only (TUH)
    return {"channels": len(std), "median_rms": float(np.median(std)), "n": x.shape[1]}


def test_qc_report_runs_unchanged_on_local_and_ray_with_resume(corpus, ray_session, tmp_path):
    outs = {}
    for name in ("local", "ray"):
        dest = tmp_path / name
        result = run_stage(QCReportStage(corpus=corpus, dest=str(dest), seconds=5.0), name)
        assert result.summary["by_outcome"] == {"ok": 3} and result.summary["run"]["ran"] == 3
        assert json.loads((dest / "summary.json").read_text()) == result.summary
        rows = Ledger(str(dest), StageRow).read(raw=True)
        assert len(rows) == len({r.key for r in rows}) == 3 and {r.stage for r in rows} == {
            "qc-report"
        }
        outs[name] = {p.name: p.read_bytes() for p in sorted((dest / "qc").glob("*.json"))}
        again = run_stage(QCReportStage(corpus=corpus, dest=str(dest), seconds=5.0), name)
        assert again.summary["run"]["ran"] == 0 and again.summary["run"]["not_rerun"] == 3
        assert len(Ledger(str(dest), StageRow).read(raw=True)) == 3
    assert outs["local"] == outs["ray"] and len(outs["local"]) == 3
    for body in outs["local"].values():
        rep = json.loads(body)
        want = _expected(Path(rep["store"]), 5.0)
        assert rep["seconds_read"] == want["n"] == 5 * 256
        assert rep["EEG"]["channels"] == want["channels"]
        assert rep["EEG"]["median_rms"] == pytest.approx(want["median_rms"], rel=1e-9)
        assert rep["EEG"]["median_rms"] > 0


@dataclass
class Toy(Stage):
    """Units named after what they do (see the test below)."""

    name: ClassVar[str] = "toy"
    expected_errors: ClassVar[tuple] = (ValueError,)
    dest: str = ""
    units_: tuple = ()
    retry_policy: RetryPolicy = RetryPolicy(total_s=30, base_delay=0.01, max_delay=0.02)

    def units(self):
        return self.units_

    def key(self, unit):
        return unit

    def run_unit(self, unit, *, attempt, worker):
        flag = Path(self.dest, f"{unit}.tried")
        if unit == "flaky" and not flag.exists():
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.touch()
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        if unit == "bad":
            raise ValueError("bad input: header says 3 channels, data has 2")
        if unit == "bug":
            return {}["missing"]
        if unit == "die":
            os._exit(1)  # the worker process dies (as out of memory would kill it)
        return StageRow(unit, outcome="ok", items=1)


@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_core_rows_for_retry_bad_input_bug_and_dead_worker(executor, ray_session, tmp_path):
    units = ("ok", "flaky", "bad", "bug") + (("die",) if executor == "ray" else ())
    ex = RayExecutor(max_retries=0) if executor == "ray" else executor
    result = run_stage(Toy(dest=str(tmp_path), units_=units), ex)
    rows = {r.key: r for r in result.rows}
    assert set(rows) == set(units)
    assert rows["ok"].outcome == "ok" and rows["ok"].tries == 1
    assert (rows["flaky"].outcome, rows["flaky"].tries) == ("ok", 2)  # transient: retried
    assert (rows["bad"].outcome, rows["bad"].error_class) == ("failed", "ValueError")
    assert "3 channels" in rows["bad"].reason
    assert (rows["bug"].outcome, rows["bug"].error_class) == ("failed", "Unexpected.KeyError")
    if executor == "ray":
        assert rows["die"].outcome == "failed"
        assert rows["die"].error_class.startswith("WorkerDied.")
    assert result.summary["run"]["executor"] == executor_name(executor)
    fails = {f["error_class"]: f for f in result.summary["failures"]}
    assert "report it" in fails["Unexpected.KeyError"]["fix"]
    # failed units run again on the next run (attempt 2), the others stand
    again = run_stage(Toy(dest=str(tmp_path), units_=units), "local" if executor != "ray" else ex)
    assert again.summary["run"]["not_rerun"] == 2
    assert {r.key: r.attempt for r in again.rows}["bad"] == 2


def test_executor_names():
    assert executor_name("serial") == "local" and executor_name("ray") == "ray"
    with pytest.raises(ValueError, match="local, ray"):
        executor_name("dask")
    # an entry point passes its Ray options whatever the executor: local ignores them
    assert isinstance(get_executor("serial", address="auto", num_cpus=4), LocalExecutor)
    ray_ex = get_executor("ray", address=None, num_cpus=4, task_cpus=2.0)
    assert isinstance(ray_ex, RayExecutor) and (ray_ex.num_cpus, ray_ex.task_cpus) == (4, 2.0)
    assert get_executor(ray_ex) is ray_ex


def test_pack_input_is_the_ingest_ledgers_ok_rows(corpus, tmp_path):
    """Pack's frozen input: the ok rows of the ingest ledger, not a glob of markers — a store
    whose latest row failed is left out although complete; a listed store that is gone is
    dropped with a reason; an unsafe recording id in the ledger is refused."""
    import dataclasses
    import shutil

    from brainomni.ingest.ledger import ok_stores, read_ledger, write_part
    from brainomni.pack import get_profile
    from brainomni.pack.run import prepare_pack
    from brainomni.splits import SplitConfig

    dest = tmp_path / "ingest"
    shutil.copytree(corpus, dest)
    rows = read_ledger(str(dest))
    assert len(ok_stores(str(dest))) == len(rows) == 3
    failed, gone = rows[0], rows[1]
    write_part(str(dest), dataclasses.replace(failed, outcome="failed", attempt=failed.attempt + 1))
    shutil.rmtree(next(dest.glob(f"recordings/*/{gone.recording_id}.zarr")))
    assert len(list(dest.glob("recordings/*/*.zarr/_COMPLETE"))) == 2  # failed one complete
    cfg = get_profile("tokenizer-10s", window_s=4.0, stride_s=4.0)
    plan = prepare_pack(str(dest), str(tmp_path / "pack"), cfg, SplitConfig())
    assert [r.recording_id for r in plan.recordings] == [rows[2].recording_id]
    assert [(d["reason"], gone.recording_id in d["uri"]) for d in plan.dropped] == [
        ("store_missing", True)
    ]
    write_part(str(dest), dataclasses.replace(rows[2], recording_id="../../etc", attempt=9))
    with pytest.raises(ValueError, match="not a plain name"):
        ok_stores(str(dest))


def test_qc_report_damaged_store_is_a_failed_row(corpus, tmp_path):
    import shutil

    import zarr

    dest = tmp_path / "ingest"
    shutil.copytree(corpus, dest)
    store = sorted(dest.glob("recordings/*/*.zarr"))[0]
    g = zarr.open_group(str(store), mode="r+")
    g.attrs["sfreq"] = "fast"  # a damaged attribute: file content is not trusted
    result = run_stage(QCReportStage(corpus=str(dest), dest=str(tmp_path / "qc")), "local")
    rows = {r.key: r for r in result.rows}
    bad = rows[store.name.removesuffix(".zarr")]
    assert (bad.outcome, bad.error_class) == ("failed", "ValueError") and "sfreq" in bad.reason
    assert result.summary["by_outcome"] == {"failed": 1, "ok": 2}
