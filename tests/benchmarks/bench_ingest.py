"""Throughput and fixed overheads of the Ray ingest job against direct calls.

    RAY_AUTH_MODE=disabled .venv/bin/python tests/benchmarks/bench_ingest.py [--edf 4] [--edf-minutes 10] [--fif 2] [--fif-minutes 5] [--tiny 16] [--num-cpus 2] [--out bench-out/ingest]

Builds inputs by tiling real recordings from ../shared/data/meeg (64-channel EDF tiled to
EDF_MINUTES in a TUH tree; the 376-channel Neuromag FIF tiled to FIF_MINUTES in a BIDS tree
written with mne-bids; TINY untouched 10-s TUH EDFs), then measures

* direct: ``preprocess_recording`` called in this process, one recording after another;
* ray: ``pipelines/ingest.py`` as a subprocess (local Ray, ``--num-cpus``), whole command.

Reports recording-hours (input) per core-hour (wall x cores given), per-recording overhead
(Ray task time minus the direct call, and the scheduling cost from the tiny set) and the
fixed per-job overhead (interpreter, imports, Ray start/stop, crawl, ledger, summary).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.conftest import MEEG_DIR  # noqa: E402


def build_inputs(base: Path, a: argparse.Namespace) -> dict[str, list[str]]:
    import mne
    from mne_bids import BIDSPath, make_dataset_description, write_raw_bids

    srcs: dict[str, list[str]] = {}
    edf = mne.io.read_raw_edf(
        MEEG_DIR / "EDF/test_edf_overlapping_annotations.edf", preload=True, verbose="error"
    )
    edf.set_annotations(None)
    reps = max(1, round(a.edf_minutes * 60 / edf.times[-1]))
    long = mne.concatenate_raws([edf.copy() for _ in range(reps)], verbose="error")
    long.set_annotations(None)
    tuh = base / "tuh_long" / "edf" / "01_tcp_ar"
    tuh.mkdir(parents=True, exist_ok=True)
    first = tuh / "00000001_s001_t000.edf"
    mne.export.export_raw(first, long, fmt="edf", overwrite=True, verbose="error")
    data = first.read_bytes()
    for i in range(1, a.edf):
        (tuh / f"{1 + i:08d}_s001_t000.edf").write_bytes(data[:8] + f"{i:<2d}".encode() + data[10:])
    srcs["long"] = [f"{base / 'tuh_long'} kind=tuh name=tuh_long version=1 line_freq=60"]
    if a.fif:
        fif = mne.io.read_raw_fif(
            MEEG_DIR / "SSS/sample_audvis_trunc_raw_sss.fif", preload=True, verbose="error"
        )
        fif.info["line_freq"] = 60.0
        n = max(1, round(a.fif_minutes * 60 * fif.info["sfreq"] / fif.n_times))
        longf = mne.concatenate_raws([fif.copy() for _ in range(n)], verbose="error")
        longf.set_annotations(None)
        root = base / "bids_meg"
        for i in range(a.fif):
            bp = BIDSPath(subject=f"{i + 1:02d}", task="tiled", datatype="meg", root=root)
            write_raw_bids(
                longf, bp, overwrite=True, allow_preload=True, format="FIF", verbose="error"
            )
        make_dataset_description(
            path=root, name="bench MEG", dataset_type="raw", overwrite=True, verbose="error"
        )
        srcs["long"].append(str(root))
    tiny = base / "tuh_tiny" / "edf" / "01_tcp_ar"
    tiny.mkdir(parents=True, exist_ok=True)
    short = edf.copy().crop(0, 10 - 1 / edf.info["sfreq"])
    t0 = tiny / "00000001_s001_t000.edf"
    mne.export.export_raw(t0, short, fmt="edf", overwrite=True, verbose="error")
    d0 = t0.read_bytes()
    for i in range(1, a.tiny):
        (tiny / f"{1 + i:08d}_s001_t000.edf").write_bytes(d0[:8] + f"{i:<2d}".encode() + d0[10:])
    srcs["tiny"] = [f"{base / 'tuh_tiny'} kind=tuh name=tuh_tiny version=1 line_freq=60"]
    return srcs


def direct(specs: list[str], out: Path) -> dict[str, float]:
    """preprocess_recording on every crawled recording, serially, in this process."""
    import shlex

    from brainomni.clean import preprocess_recording
    from brainomni.sources import Source, crawl, detect_source

    refs = []
    for spec in specs:
        url, *kv = shlex.split(spec)
        kw = dict(x.split("=", 1) for x in kv)
        if "line_freq" in kw:
            kw["line_freq"] = float(kw["line_freq"])
        src = Source(url=url, **kw) if kw else detect_source(url)
        refs += crawl(src).recordings
    hours = wall = cpu = 0.0
    per = []
    for ref in refs:
        t0, c0 = time.perf_counter(), time.process_time()
        res = preprocess_recording(ref, out=str(out / f"{ref.recording_id}.zarr"))
        dt = time.perf_counter() - t0
        assert res.outcome == "ok", res.reason
        wall += dt
        cpu += time.process_time() - c0
        hours += (res.duration_s or 0) / 3600
        per.append(dt)
    return {
        "n": len(refs),
        "hours": hours,
        "wall_s": wall,
        "cpu_s": cpu,
        "mean_s": wall / len(refs),
    }


def ray_job(specs: list[str], dest: Path, cpus: int) -> dict[str, float]:
    import pyarrow.parquet as pq

    cmd = [
        sys.executable,
        str(ROOT / "pipelines/ingest.py"),
        "--dest",
        str(dest),
        "--num-cpus",
        str(cpus),
        "--log-level",
        "WARNING",
    ]
    for s in specs:
        cmd += ["--source", s]
    t0 = time.perf_counter()
    subprocess.run(
        cmd, check=True, capture_output=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"}
    )
    wall = time.perf_counter() - t0
    summary = json.loads((dest / "summary.json").read_text())
    ledger = pq.read_table(dest / "ledger.parquet").to_pylist()
    assert all(r["outcome"] == "ok" for r in ledger)
    return {
        "n": len(ledger),
        "hours": sum((r["duration_s"] or 0) for r in ledger) / 3600,
        "wall_s": wall,
        "run_s": summary["run"]["run_s"],
        "startup_s": summary["run"]["executor_startup_s"] + summary["run"]["executor_shutdown_s"],
        "sched_s": summary["run"]["run_s"]
        - summary["run"]["executor_startup_s"]
        - summary["run"]["executor_shutdown_s"],
        "task_s": sum(r["t_task_s"] for r in ledger),
        "pre_s": sum(r["t_preprocess_s"] for r in ledger),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edf", type=int, default=4)
    ap.add_argument("--edf-minutes", type=float, default=10)
    ap.add_argument("--fif", type=int, default=2)
    ap.add_argument("--fif-minutes", type=float, default=5)
    ap.add_argument("--tiny", type=int, default=16)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "ingest"))
    a = ap.parse_args()
    if MEEG_DIR is None:
        sys.exit("real recordings not found (../shared/data/meeg)")
    import mne

    mne.set_log_level("ERROR")
    base = Path(a.out)
    shutil.rmtree(base, ignore_errors=True)
    specs = build_inputs(base / "inputs", a)
    rows = {}
    for kind in ("long", "tiny"):
        rows[f"direct/{kind}"] = direct(specs[kind], base / f"direct-{kind}")
        rows[f"ray/{kind}"] = ray_job(specs[kind], base / f"ray-{kind}", a.num_cpus)

    def per_core_hour(r: dict, cores: int) -> float:
        return r["hours"] / (r["wall_s"] * cores / 3600)

    print(
        f"\n{'run':<12}{'recs':>5}{'rec-hours':>11}{'wall s':>9}{'cores':>6}{'rec-h / core-h':>16}"
    )
    for name, r in rows.items():
        cores = 1 if name.startswith("direct") else a.num_cpus
        print(
            f"{name:<12}{r['n']:>5}{r['hours']:>11.3f}{r['wall_s']:>9.2f}{cores:>6}{per_core_hour(r, cores):>16.0f}"
        )
    dl, rl, dt, rt = rows["direct/long"], rows["ray/long"], rows["direct/tiny"], rows["ray/tiny"]
    ideal = dl["wall_s"] / a.num_cpus
    print("\noverheads")
    print(
        f"  per recording, inside the task (ledger t_task - t_preprocess): {(rl['task_s'] - rl['pre_s']) / rl['n'] * 1e3:.0f} ms"
    )
    print(
        f"  per recording, task vs direct call (long set):               {(rl['pre_s'] - dl['wall_s']) / rl['n'] * 1e3:+.0f} ms"
    )
    print(
        f"  per recording, tiny set (task phase x cores / n - direct mean): {(rt['sched_s'] * a.num_cpus / rt['n'] - dt['mean_s']) * 1e3:+.0f} ms"
    )
    print(f"  per job, Ray start + stop:                                   {rt['startup_s']:.1f} s")
    print(
        f"  per job, whole command minus task phase (tiny set):          {rt['wall_s'] - rt['sched_s']:.1f} s"
    )
    print(
        f"  per job, whole command minus direct wall / {a.num_cpus} cores (long): {rl['wall_s'] - ideal:.1f} s"
    )
    print(
        f"  ray/long efficiency vs {a.num_cpus} x direct: {ideal / rl['wall_s']:.0%} (whole command), {ideal / rl['sched_s']:.0%} (task phase)"
    )
    print(
        "\ncommand: RAY_AUTH_MODE=disabled .venv/bin/python tests/benchmarks/bench_ingest.py "
        + " ".join(sys.argv[1:])
    )
    print(
        f"machine: {os.cpu_count()} cores visible; other load on the machine inflates all figures"
    )


if __name__ == "__main__":
    main()
