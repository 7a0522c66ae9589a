"""A job killed mid-run (SIGKILL to the driver and its Ray workers) and run again ends with
exactly the stores of an uninterrupted run, and one ledger row per recording."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brainomni.ingest import IngestJob, read_ledger, run_job
from brainomni.ingest.ledger import PARTS_DIR
from brainomni.pipeline.ray import RayExecutor
from brainomni.sources import Source
from tests.conftest import ROOT
from tests.ingest.conftest import store_hashes

pytestmark = pytest.mark.slow
N_FILES = 12


def _tree(root: Path, tuh_v1_corpus) -> Path:
    """A flat TUH tree of N_FILES 60-s EDFs, tiled from the corpus' real 10-s EDF."""
    import mne

    src = next(tuh_v1_corpus.root.rglob("00000254_s005_t000.edf"))
    raw = mne.io.read_raw_edf(src, preload=True, verbose="error")
    long = mne.concatenate_raws([raw.copy() for _ in range(6)], verbose="error")
    long.set_annotations(None)
    folder = root / "edf" / "01_tcp_ar"
    folder.mkdir(parents=True)
    first = folder / "00000100_s001_t000.edf"
    mne.export.export_raw(first, long, fmt="edf", overwrite=True, verbose="error")
    data = first.read_bytes()
    for i in range(1, N_FILES):  # same signal, distinct files (a byte in the patient field)
        patched = data[:8] + f"{i:<2d}".encode() + data[10:]
        (folder / f"{100 + i:08d}_s001_t000.edf").write_bytes(patched)
    return root


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_kill_and_rerun_gives_identical_stores(ray_local, tuh_v1_corpus, tmp_path):
    tree = _tree(tmp_path / "tuh_long", tuh_v1_corpus)
    source = Source(url=str(tree), kind="tuh", name="tuh_long", version="1", line_freq=60.0)
    reference, dest = tmp_path / "reference", tmp_path / "killed"
    run_job(IngestJob(sources=(source,), dest=str(reference)), RayExecutor())
    ref_hashes = store_hashes(reference)
    assert len([k for k in ref_hashes if k.endswith("_COMPLETE")]) == N_FILES

    cmd = [
        sys.executable, str(ROOT / "pipelines" / "ingest.py"),
        "--source", f"{tree} kind=tuh name=tuh_long version=1 line_freq=60",
        "--dest", str(dest), "--num-cpus", "2", "--max-in-flight", "2", "--progress-every", "1",
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = open(tmp_path / "killed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
    )
    tree_pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(dest.glob(f"{PARTS_DIR}/part-*"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        tree_pids = _descendants(proc.pid)
        workers = [p for p in tree_pids if _cmdline(p).startswith("ray::")]
        assert workers, "no Ray workers found under the driver"
        for pid in [proc.pid, *workers]:  # driver and workers at once
            os.kill(pid, signal.SIGKILL)
    finally:
        for pid in [proc.pid, *_descendants(proc.pid), *tree_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the rest of its local Ray (raylet, gcs...)
        proc.wait(timeout=30)
        log.close()
    done = len(list(dest.glob("recordings/*/*.zarr/_COMPLETE")))
    assert 2 <= done < N_FILES, f"kill came too late: {done} stores complete"
    killed_rows = read_ledger(str(dest), raw=True)
    assert 2 <= len(killed_rows) < N_FILES
    assert not (dest / "ledger.parquet").exists()

    summary = run_job(IngestJob(sources=(source,), dest=str(dest)), RayExecutor())
    assert summary["run"]["resumed"] and summary["run"]["not_rerun"] == len(killed_rows)
    print(f"killed after {done} stores, {len(killed_rows)} ledger rows; rerun: {summary['run']}")
    assert summary["by_outcome"] == {"ok": N_FILES}
    assert store_hashes(dest) == ref_hashes  # byte-identical stores, no leftovers
    rows = read_ledger(str(dest), raw=True)
    ids = [r.recording_id for r in rows]
    assert len(ids) == len(set(ids)) == N_FILES
    leftovers = [p for p in dest.glob("recordings/*/*") if not p.name.endswith(".zarr")]
    assert not leftovers  # no temporary store folders left behind
