"""``make demo``: the main job end to end on embedded defaults, in minutes on 2 cores.

1. A small BIDS dataset (EEG and MEG, several vendors) written with mne-bids from the real
   recordings in ``../shared/data/meeg`` (tiled to a minute or two where they are short),
   or generated recordings on a standard montage when the real ones are absent.
2. The Ray ingest job (local Ray, local folders) -> per-recording Zarr stores + ledger.
3. Pack into WebDataset shards for both stages and publish versioned manifests.
4. When the training stack is installed: pretrain the tokenizer, tokenize once, pretrain
   BrainOmni tiny, and write a short report.

    python -m brainomni.demo [--out demo-out] [--synthetic] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from brainomni.cli_common import setup_logging

log = logging.getLogger("brainomni.demo")
ROOT = Path(__file__).resolve().parents[1]

# (subject, datatype, shared file, seconds, BIDS format, task)
REAL = [
    ("01", "eeg", "EDF/test_edf_overlapping_annotations.edf", None, "EDF", "rest"),
    ("02", "eeg", "CNT/scan41_short.cnt", 75, "BrainVision", "rest"),
    ("03", "meg", "SSS/sample_audvis_trunc_raw_sss.fif", 75, "FIF", "rest"),
    ("04", "eeg", "EGI/test_egi_multiepoch_eprime.mff", 75, "BrainVision", "rest"),
    ("05", "meg", "CTF/testdata_ctf_short_discontinuous.ds", 75, "FIF", "rest"),
]


def _meeg_dir() -> Path | None:
    env = os.environ.get("BRAINOMNI_MEEG_DIR")
    cands = ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "meeg"]
    return next((c for c in cands if (c / "SSS").is_dir()), None)


def _tile(raw, seconds: float):
    import mne

    d = raw.get_data()
    n = int(seconds * raw.info["sfreq"])
    seg = np.concatenate([d, d[:, ::-1]], axis=1)
    rng = np.random.default_rng(0)
    big = np.tile(seg, (1, n // seg.shape[1] + 1))[:, :n]
    big = big + 0.05 * big.std(axis=1, keepdims=True) * rng.standard_normal(big.shape)
    out = mne.io.RawArray(big, raw.info, verbose="error")
    out.set_annotations(None)
    return out


def _synthetic(seconds: float, n_ch: int, sfreq: float, seed: int):
    """1/f-like EEG on standard 10-20 names with alpha and 50 Hz mains."""
    import mne

    names = mne.channels.make_standard_montage("standard_1020").ch_names[:n_ch]
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    x = np.cumsum(rng.standard_normal((n_ch, n)), axis=1)
    x -= np.linspace(0, 1, n)[None] * x[:, -1:]
    t = np.arange(n) / sfreq
    x = 2e-6 * x / x.std(axis=1, keepdims=True) + 5e-6 * np.sin(2 * np.pi * 10 * t)
    x += 1e-6 * np.sin(2 * np.pi * 50 * t)
    info = mne.create_info(names, sfreq, "eeg")
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.set_montage("standard_1020")
    return raw


def build_bids(root: Path, *, synthetic: bool = False) -> Path:
    """Write the demo BIDS dataset under ``root`` and return it."""
    import mne
    from mne_bids import BIDSPath, make_dataset_description, write_raw_bids

    from .readers import open_raw

    mne.set_log_level("error")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tmp = root.parent / "demo-raw-tmp"
    tmp.mkdir(exist_ok=True)
    meeg = None if synthetic else _meeg_dir()
    items = []
    if meeg is not None:
        for sub, dtype, rel, secs, fmt, task in REAL:
            with open_raw(str(meeg / rel)) as opened:  # the readers' per-format quirks
                raw = opened.raw.load_data().copy()
            if secs:
                raw = _tile(raw, secs)
            raw.info["line_freq"] = 60.0 if sub in ("03", "05") else 50.0
            items.append((sub, dtype, raw, fmt, task))
    else:
        log.warning("real recordings not found: generating synthetic EEG instead")
        for i in range(4):
            raw = _synthetic(90, 19 + 13 * i, 250.0 * (1 + i % 2), seed=i)
            raw.info["line_freq"] = 50.0
            items.append((f"{i + 1:02d}", "eeg", raw, "BrainVision", "rest"))
    for sub, dtype, raw, fmt, task in items:
        src = tmp / f"sub-{sub}_raw.fif"
        raw.save(str(src), overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(str(src), verbose="error")
        bp = BIDSPath(subject=sub, task=task, datatype=dtype, root=root)
        write_raw_bids(raw, bp, format=fmt, allow_preload=True, overwrite=True, verbose="error")
    make_dataset_description(
        path=root, name="brainomni-demo", dataset_type="raw", overwrite=True, verbose="error"
    )
    desc = json.loads((root / "dataset_description.json").read_text())
    desc["DatasetVersion"] = "1.0.0"
    (root / "dataset_description.json").write_text(json.dumps(desc, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return root


def _run(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    log.info("%s done in %.1f s", what, time.perf_counter() - t0)


def _train_available() -> bool:
    try:
        import brainomni.train.cli  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m brainomni.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    ap.add_argument(
        "--synthetic", action="store_true", help="generate recordings even when the real ones exist"
    )
    ap.add_argument("--skip-train", action="store_true", help="stop after publishing the manifests")
    args = ap.parse_args(argv)
    setup_logging(logging.INFO)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    t0 = time.perf_counter()

    bids = build_bids(out / "bids", synthetic=args.synthetic)
    corpus = out / "corpus"
    _run(
        [
            py,
            "pipelines/ingest.py",
            "--source",
            str(bids),
            "--dest",
            str(corpus),
            "--num-cpus",
            "2",
        ],
        "ingest",
    )
    manifests = {}
    for profile in ("tokenizer-10s", "omni-30s"):
        shards = out / "shards" / profile
        _run(
            [
                py,
                "pipelines/pack.py",
                "--source",
                str(corpus / "recordings"),
                "--profile",
                profile,
                "--dest",
                str(shards),
                "--executor",
                "local",
            ],
            f"pack {profile}",
        )
        mdir = out / "manifests"
        name = f"demo-{profile}"
        mfile = mdir / name / "1.0.0" / "manifest.json"
        if not mfile.exists():
            _run(
                [
                    py,
                    "pipelines/publish.py",
                    "publish",
                    "--source",
                    str(shards),
                    "--name",
                    name,
                    "--version",
                    "1.0.0",
                    "--dest",
                    str(mdir),
                ],
                f"publish {profile}",
            )
        _run(
            [
                py,
                "pipelines/publish.py",
                "verify",
                str(next(mdir.glob(f"{name}*/**/manifest.json"), mfile)),
            ],
            f"verify {profile}",
        )
        manifests[profile] = next(mdir.glob(f"{name}*/**/manifest.json"), mfile)

    if not args.skip_train and _train_available():
        from .demo_train import train_and_report

        train_and_report(out, manifests)
    elif not args.skip_train:
        log.warning("training stack not available (brainomni.train): stopping after the manifests")

    summary = (
        json.loads((corpus / "summary.json").read_text())
        if (corpus / "summary.json").exists()
        else {}
    )
    print("\n== demo finished in %.0f s ==" % (time.perf_counter() - t0))
    print(f"BIDS dataset : {bids}")
    print(f"corpus       : {corpus}  (ledger.parquet, summary.json, recordings/)")
    if summary:
        print(f"outcomes     : {summary.get('by_outcome')}, hours {summary.get('hours')}")
    for p, m in manifests.items():
        print(f"manifest     : {p}: {m}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
