"""End-to-end rehearsal of the full-corpus plan: ingest -> pack -> loader, on local Ray and
an S3 endpoint (moto's server on 127.0.0.1), reported per stage as recording-hours per
core-hour.

    RAY_AUTH_MODE=disabled PYTHONPATH=. python tests/benchmarks/bench_rehearsal.py            # 10 h
    RAY_AUTH_MODE=disabled PYTHONPATH=. python tests/benchmarks/bench_rehearsal.py --hours 1

Inputs are tiled from the real recordings of ../shared/data/meeg into one BIDS dataset
written with mne-bids (recordings of ``--minutes`` each): 64-channel EEG (EDF, 128 Hz) for
65 % of the hours, Neuromag 306 + 60 EEG (FIF, 300 Hz) 20 %, KIT 125 (1 kHz) 10 %, CTF 275
(1.2 kHz) 5 %. Then, each stage as the README runs it, timed on the wall clock with the cores
it was given (``--num-cpus``, default all):

1. ``pipelines/ingest.py`` (local Ray) into a local corpus;
2. ``pipelines/pack.py`` (local Ray) of the 10-s tokenizer profile into ``s3://rehearsal``;
3. ``pipelines/publish.py`` publish + verify of that pack;
4. the loader: one pass over the train split from S3 (one process, ``workers=0``).

Figures go to stdout as a Markdown table; ``docs/full-corpus.md`` quotes them. Not a test.
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
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.conftest import MEEG_DIR  # noqa: E402

MIX = (  # (label, file under MEEG_DIR, share of the hours, longest recording in minutes)
    ("EEG 64 ch EDF", "EDF/test_edf_overlapping_annotations.edf", 0.65, None),
    ("Neuromag 306+60", "SSS/sample_audvis_trunc_raw_sss.fif", 0.20, None),
    ("KIT 125", "KIT/MQKIT_125_2sec.con", 0.10, None),
    # 1.2 kHz x 300+ channels is tiled in memory (float64): 10-min pieces stay under 5 GB
    ("CTF 275", "CTF/testdata_ctf_short_discontinuous.ds", 0.05, 10.0),
)


def _tile(raw, seconds: float):
    import mne

    raw.set_annotations(None)
    n = max(1, round(seconds * raw.info["sfreq"] / raw.n_times))
    out = mne.concatenate_raws([raw.copy() for _ in range(n)], verbose="error")
    out.set_annotations(None)
    return out


def build(root: Path, hours: float, minutes: float) -> dict[str, float]:
    """The BIDS dataset; recording-hours per device family."""
    import mne
    from mne_bids import BIDSPath, make_dataset_description, write_raw_bids

    got: dict[str, float] = {}
    sub = 0
    for label, rel, share, longest in MIX:
        raw = mne.io.read_raw(MEEG_DIR / rel, preload=True, verbose="error")
        if label.startswith("CTF"):
            raw.pick(["meg", "eeg", "ref_meg", "stim"], verbose="error")
        raw.info["line_freq"] = 50.0
        length = min(minutes, longest or minutes)
        n_rec = max(1, round(hours * share * 60 / length))
        tiled = _tile(raw, length * 60)
        fmt = "EDF" if label.startswith("EEG") else "FIF"
        datatype = "eeg" if label.startswith("EEG") else "meg"
        for _ in range(n_rec):
            sub += 1
            bp = BIDSPath(subject=f"{sub:03d}", task="rest", datatype=datatype, root=root)
            if (root / f"sub-{sub:03d}").exists():  # kept from an interrupted build
                continue
            write_raw_bids(
                tiled, bp, overwrite=True, allow_preload=True, format=fmt, verbose="error"
            )
        got[label] = n_rec * tiled.times[-1] / 3600
        print(f"  built {n_rec} x {tiled.times[-1] / 60:.1f} min of {label}", flush=True)
    make_dataset_description(path=root, name="rehearsal", dataset_type="raw", overwrite=True)
    return got


def _s3() -> tuple[object, dict, str]:
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAREHEARSALFAKE000",
        "AWS_SECRET_ACCESS_KEY": "fake-secret-for-the-local-moto-server",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("rehearsal")
    return srv, env, endpoint


def run(name: str, cmd: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=os.environ)
    dt = time.perf_counter() - t
    print(f"  {name}: {dt:.1f} s", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hours", type=float, default=10.0, help="recording-hours (default 10)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of one recording")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "rehearsal"))
    ap.add_argument("--keep-inputs", action="store_true", help="reuse OUT/bids if present")
    ap.add_argument("--build-only", action="store_true", help="build the inputs and stop")
    a = ap.parse_args()
    if MEEG_DIR is None:
        sys.exit("the real recordings (../shared/data/meeg) are needed")
    out = Path(a.out)
    bids = out / "bids"
    if not (a.keep_inputs and (out / "mix.json").exists()):
        if not a.keep_inputs:
            shutil.rmtree(out, ignore_errors=True)
        bids.mkdir(parents=True, exist_ok=True)
        print(f"building {a.hours:g} recording-hours under {bids}", flush=True)
        mix = build(bids, a.hours, a.minutes)
        (out / "mix.json").write_text(json.dumps(mix))
    mix = json.loads((out / "mix.json").read_text())
    if a.build_only:
        return
    for p in ("corpus", "logs", "manifests"):
        shutil.rmtree(out / p, ignore_errors=True)
    (out / "logs").mkdir()
    hours = sum(mix.values())
    srv, _, endpoint = _s3()
    py = sys.executable
    cores = a.num_cpus
    t = {}
    try:
        t["ingest"] = run(
            "ingest",
            [
                py,
                str(ROOT / "pipelines/ingest.py"),
                "--source",
                str(bids),
                "--dest",
                str(out / "corpus"),
                "--num-cpus",
                str(cores),
            ],
            out / "logs" / "ingest.log",
        )
        summary = json.loads((out / "corpus" / "summary.json").read_text())
        t["pack"] = run(
            "pack",
            [
                py,
                str(ROOT / "pipelines/pack.py"),
                "--store",
                str(out / "corpus"),
                "--profile",
                "tokenizer-10s",
                "--dest",
                "s3://rehearsal/pack",
                "--num-cpus",
                str(cores),
            ],
            out / "logs" / "pack.log",
        )
        t["publish+verify"] = run(
            "publish+verify",
            [
                py,
                str(ROOT / "pipelines/publish.py"),
                "publish",
                "--shards",
                "s3://rehearsal/pack",
                "--name",
                "rehearsal",
                "--version",
                "1.0.0",
                "--out",
                str(out / "manifests"),
            ],
            out / "logs" / "publish.log",
        )
        manifest = out / "manifests" / "rehearsal" / "1.0.0" / "manifest.json"
        t["publish+verify"] += run(
            "verify",
            [py, str(ROOT / "pipelines/publish.py"), "verify", str(manifest)],
            out / "logs" / "verify.log",
        )
        from brainomni.loader.loader import ShardLoader

        m = json.loads(manifest.read_text())
        t0 = time.perf_counter()
        ld = ShardLoader(str(manifest), "train", micro_batch=8, chunk=64, max_epochs=1)
        n = sum(b["size"] for b in ld)
        t["loader (1 process)"] = time.perf_counter() - t0
        train_h = n * 10 / 3600
    finally:
        srv.stop()
    print(f"\n{hours:.2f} recording-hours: " + ", ".join(f"{k} {v:.2f} h" for k, v in mix.items()))
    print(
        f"ingest outcomes {summary['by_outcome']}, {summary['hours']:.2f} h cleaned; "
        f"pack {m['totals']['shards']} shards, {m['totals']['samples']} samples, "
        f"{m['totals']['bytes'] / 1e9:.2f} GB; loader read {n} train samples ({train_h:.2f} h)"
    )
    print("\n| stage | wall s | cores | recording-hours per core-hour |")
    print("|---|---|---|---|")
    for name, dt in t.items():
        c = 1 if name.startswith("loader") else cores
        h = train_h if name.startswith("loader") else hours
        print(f"| {name} | {dt:.1f} | {c} | {h / (dt * c / 3600):.0f} |")


if __name__ == "__main__":
    main()
