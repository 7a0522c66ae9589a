"""The demo's small BIDS dataset: the shared recordings written with mne-bids (several
vendors, EEG and MEG; the short ones tiled), or generated EEG when they are absent."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("demo")
ROOT = Path(__file__).resolve().parents[1]

# (subject, datatype, shared file, seconds, BIDS format, task)
REAL = [
    ("01", "eeg", "EDF/test_edf_overlapping_annotations.edf", None, "EDF", "rest"),
    ("02", "eeg", "CNT/scan41_short.cnt", 75, "BrainVision", "rest"),
    ("03", "meg", "SSS/sample_audvis_trunc_raw_sss.fif", 75, "FIF", "rest"),
    ("04", "eeg", "EGI/test_egi_multiepoch_eprime.mff", 75, "BrainVision", "rest"),
    ("05", "meg", "CTF/testdata_ctf_short_discontinuous.ds", 75, "FIF", "rest"),
]


def meeg_dir() -> Path | None:
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

    from brainomni.readers import open_raw

    mne.set_log_level("error")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tmp = root.parent / "demo-raw-tmp"
    tmp.mkdir(exist_ok=True)
    meeg = None if synthetic else meeg_dir()
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
