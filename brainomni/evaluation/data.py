"""The labelled-window set every evaluation consumes (the interface between the data side,
which cuts labelled windows from real recordings, and the fine-tuning side).

A :class:`LabelledSet` is a list of windows in the pretraining sample format (what
``brainomni.pack`` writes and the loader reads: ``signal`` (C, T), ``sensors`` (C, 6) float32
position + orientation, ``sensor_type`` (C,) int8 EEG 0 / MAG 1 / GRAD 2, the signal
normalised per window and sensor type as for pretraining) plus, per window, an integer
``label`` and the ``subject`` and ``recording_id`` it came from (folds are by subject).
Channel counts may differ between windows (several devices); the window length may not.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The on-disk form of a LabelledSet (save_labelled_set / load_labelled_set below): a folder
# holding windows.tar (the pretraining sample format, checked by the loader's own checker)
# and labelled_set.json (classes, count, sha256, meta). No pickles.
SET_FORMAT = "brainomni.labelled-set/1"
INDEX_NAME = "labelled_set.json"
TAR_NAME = "windows.tar"
MAX_INDEX_BYTES = 64 * 1024 * 1024
MAX_WINDOWS = 10_000_000


@dataclass(frozen=True, slots=True)
class Window:
    """One labelled window."""

    signal: np.ndarray  # (C, T) float32 (or float16), normalised as for pretraining
    sensors: np.ndarray  # (C, 6) float32
    sensor_type: np.ndarray  # (C,) int8
    label: int
    subject: str  # "<dataset>/<subject>": folds never split a subject
    recording_id: str
    onset_s: float = 0.0  # where the window starts in its recording (s)

    def __post_init__(self) -> None:
        c = self.signal.shape[0]
        if self.signal.ndim != 2 or self.sensors.shape != (c, 6) or self.sensor_type.shape != (c,):
            raise ValueError(
                f"window of {self.recording_id}: signal {self.signal.shape}, sensors "
                f"{self.sensors.shape}, sensor_type {self.sensor_type.shape} do not agree"
            )
        if not self.subject:
            raise ValueError(f"window of {self.recording_id}: a subject is required (folds)")


@dataclass
class LabelledSet:
    """Labelled windows of one downstream task.

    ``classes[i]`` names label ``i``; ``meta`` records where the set came from (recipe name
    and hash, cleaning config hash, source manifest or files) and goes into results.json.
    """

    windows: list[Window]
    classes: list[str]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"LabelledSet {self.name!r}: at least two classes are needed")
        lengths = {w.signal.shape[1] for w in self.windows}
        if len(lengths) > 1:
            raise ValueError(f"LabelledSet {self.name!r}: windows of several lengths {lengths}")
        bad = [w.label for w in self.windows if not 0 <= w.label < len(self.classes)]
        if bad:
            raise ValueError(f"LabelledSet {self.name!r}: labels {sorted(set(bad))} out of range")

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([w.label for w in self.windows], dtype=np.int64)

    @property
    def subjects(self) -> np.ndarray:
        return np.asarray([w.subject for w in self.windows])

    def counts(self) -> dict[str, int]:
        c = Counter(int(w.label) for w in self.windows)
        return {self.classes[k]: c.get(k, 0) for k in range(len(self.classes))}

    def subset(self, index: np.ndarray | list[int]) -> LabelledSet:
        return LabelledSet(
            [self.windows[int(i)] for i in index], self.classes, self.name, self.meta
        )


# --------------------------------------------------------------------------- save / load


def save_labelled_set(ls: LabelledSet, dest: str) -> str:
    """Write ``ls`` under the folder ``dest`` (``windows.tar`` + ``labelled_set.json``);
    the index path. No pickles: ``.npy`` members and JSON only."""
    from brainomni.formats.sample import SampleWriter, encode_sample
    from brainomni.io.commit import AtomicFile, atomic_write_bytes

    os.makedirs(dest, exist_ok=True)
    tar_path = os.path.join(dest, TAR_NAME)
    # hashed as written, not read back
    with AtomicFile(tar_path, sha256=True) as fh, SampleWriter(fh, "raw") as tar:
        for i, w in enumerate(ls.windows):
            meta = {
                "label": int(w.label),
                "subject": w.subject,
                "recording_id": w.recording_id,
                "onset_s": float(w.onset_s),
            }
            tar.write(encode_sample(f"w{i:09d}", w.signal, w.sensors, w.sensor_type, meta))
    sha = fh.hexdigest()
    index = {
        "format": SET_FORMAT,
        "name": ls.name,
        "classes": list(ls.classes),
        "n_windows": len(ls),
        "tar": TAR_NAME,
        "sha256": sha,
        "bytes": os.path.getsize(tar_path),
        "meta": ls.meta,
    }
    path = os.path.join(dest, INDEX_NAME)
    atomic_write_bytes(path, json.dumps(index, sort_keys=True).encode())
    return path


def load_labelled_set(src: str) -> LabelledSet:
    """Read a set written by :func:`save_labelled_set`. The index and the tar are checked
    (format, sizes, sha256, every member by :func:`brainomni.formats.sample.iter_samples`,
    labels in range, window count) before a window is built; ``ValueError`` naming the file
    otherwise."""
    from brainomni.formats.sample import SCHEMAS, SampleError, iter_samples, npy_array

    idx_path = os.path.join(src, INDEX_NAME)
    size = os.path.getsize(idx_path)
    if size > MAX_INDEX_BYTES:
        raise ValueError(f"{idx_path}: {size} bytes, over the {MAX_INDEX_BYTES}-byte limit")
    with open(idx_path, "rb") as fh:
        try:
            index = json.loads(fh.read().decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{idx_path}: not a JSON index ({type(exc).__name__})") from None

    def bad(msg: str) -> ValueError:
        return ValueError(f"{idx_path}: {msg}; rewrite the set with save_labelled_set")

    if not isinstance(index, dict) or index.get("format") != SET_FORMAT:
        raise bad(f"not a {SET_FORMAT} index")
    classes, n = index.get("classes"), index.get("n_windows")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("classes must be a list of names")
    if not isinstance(n, int) or not 0 <= n <= MAX_WINDOWS:
        raise bad(f"n_windows {n!r} out of range")
    if index.get("tar") != TAR_NAME or not isinstance(index.get("meta"), dict):
        raise bad("unexpected tar name or meta")
    tar_path = os.path.join(src, TAR_NAME)
    if not os.path.isfile(tar_path):
        raise bad(f"{tar_path} is missing")
    if os.path.getsize(tar_path) != index.get("bytes"):
        raise bad(f"{tar_path} has {os.path.getsize(tar_path)} bytes, index says {index['bytes']}")
    sha = hashlib.sha256()
    with open(tar_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    if sha.hexdigest() != index.get("sha256"):
        raise bad(f"{tar_path} does not match its sha256 (changed or damaged)")
    rules = SCHEMAS["raw"]
    windows: list[Window] = []
    with open(tar_path, "rb") as fh:
        try:
            for s in iter_samples(fh, "raw", want=lambda i: True, where=tar_path):
                m = s.meta or {}
                label, subject, rid = m.get("label"), m.get("subject"), m.get("recording_id")
                onset = m.get("onset_s", 0.0)
                if not isinstance(label, int) or not 0 <= label < len(classes):
                    raise bad(f"sample {s.key}: label {label!r} out of range")
                if not isinstance(subject, str) or not subject or not isinstance(rid, str):
                    raise bad(f"sample {s.key}: subject/recording_id missing")
                if not isinstance(onset, (int, float)):
                    raise bad(f"sample {s.key}: onset_s is not a number")
                windows.append(
                    Window(
                        signal=npy_array(s.members["signal.npy"], rules["signal.npy"]).copy(),
                        sensors=npy_array(s.members["sensors.npy"], rules["sensors.npy"]).copy(),
                        sensor_type=npy_array(
                            s.members["sensor_type.npy"], rules["sensor_type.npy"]
                        ).copy(),
                        label=label,
                        subject=subject,
                        recording_id=rid,
                        onset_s=float(onset),
                    )
                )
                if len(windows) > n:
                    raise bad(f"more windows than the {n} the index names")
        except (SampleError, tarfile.TarError, EOFError) as exc:
            raise bad(f"damaged windows tar: {exc}") from None
    if len(windows) != n:
        raise bad(f"{len(windows)} windows in the tar, index says {n}")
    return LabelledSet(windows, classes, str(index.get("name", "")), index["meta"])
