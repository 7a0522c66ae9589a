"""A small corpus of real recording stores for the pack and manifest tests.

Built once per session (module-level cache) with ``preprocess_recording`` on real files from
``../shared/data/meeg``; short files are tiled (MNE ``RawArray`` saved as FIF) to give
several windows. Each recording gets its own dataset/subject provenance:

====================  =========  =======  ==========================================
store                 dataset    subject  content
====================  =========  =======  ==========================================
eeg_a                 ds004148   01       EDF, 64 EEG, 124 s
eeg_b                 ds002721   07       EDF (same file, other identity)
emeg                  ds004330   02       Neuromag SSS FIF tiled to 40 s: 60 EEG, 102 MAG, 204 GRAD
kit                   ds005241   03       KIT .con tiled to 40 s (axial GRAD)
hbn_1 / hbn_2         ds004186 / ds005505  NDARAA1  HBN releases sharing a participant
unseen                ds005697   05       EDF: unseen-device dataset
downstream            ds002778   01       EDF: PD31, must be excluded
====================  =========  =======  ==========================================
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tests.conftest import MEEG_DIR

_CACHE: dict[str, Path] = {}
EDF = "EDF/test_edf_overlapping_annotations.edf"
SPECS = {
    "eeg_a": (EDF, "ds004148", "01", 0),
    "eeg_b": (EDF, "ds002721", "07", 0),
    "emeg": ("SSS/sample_audvis_trunc_raw_sss.fif", "ds004330", "02", 40),
    "kit": ("KIT/MQKIT_125_2sec.con", "ds005241", "03", 40),
    "hbn_1": (EDF, "ds004186", "NDARAA1", 0),
    "hbn_2": (EDF, "ds005505", "NDARAA1", 0),
    "unseen": (EDF, "ds005697", "05", 0),
    "downstream": (EDF, "ds002778", "01", 0),
}


def _tiled(src: Path, seconds: float, out: Path) -> Path:
    import mne

    raw = mne.io.read_raw(src, preload=True, verbose="error")
    reps = int(np.ceil(seconds * raw.info["sfreq"] / raw.n_times))
    data = np.tile(raw.get_data(), (1, reps))
    info = raw.info.copy()
    with info._unlock():
        info["bads"] = []
    tiled = mne.io.RawArray(data, info, verbose="error")
    tiled.save(out, overwrite=True, verbose="error")
    return out


def build_corpus() -> Path:
    """``ROOT/recordings/<dataset>/<name>.zarr`` for every entry of :data:`SPECS`."""
    if "root" in _CACHE:
        return _CACHE["root"]
    from brainomni.clean import preprocess_recording
    from brainomni.records import RecordingRef

    assert MEEG_DIR is not None
    root = Path(tempfile.mkdtemp(prefix="brainomni-packcorpus-"))
    atexit.register(shutil.rmtree, root, True)
    for name, (rel, dataset, subject, tile_s) in SPECS.items():
        src = MEEG_DIR / rel
        if tile_s:
            src = _tiled(src, tile_s, root / f"{name}_raw.fif")
        ref = RecordingRef(
            uri=str(src),
            dataset=dataset,
            dataset_version="1.0.0",
            subject=subject,
            relpath=f"sub-{subject}/{name}",
            checksum=f"sha256:{name}",
        )
        res = preprocess_recording(ref, out=str(root / "recordings" / dataset / f"{name}.zarr"))
        assert res.outcome == "ok", (name, res.reason)
    _CACHE["root"] = root
    return root


def copy_store(src: Path, dst: Path, **provenance: str) -> Path:
    """Copy a store and change its provenance (recording id, dataset, subject...)."""
    import json

    shutil.copytree(src, dst)
    meta = json.loads((dst / "zarr.json").read_text())
    meta["attributes"]["provenance"].update(provenance)
    (dst / "zarr.json").write_text(json.dumps(meta))
    return dst
