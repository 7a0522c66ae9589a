"""The pipeline's vocabulary: one small record type per thing that flows through it.

Legend for array shapes: C = kept channels, T = samples.
Sensor type ids follow the official code (and the released checkpoints): EEG 0, MAG 1, GRAD 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EEG, MAG, GRAD = 0, 1, 2
SENSOR_TYPE_NAMES = {EEG: "EEG", MAG: "MAG", GRAD: "GRAD"}
SENSOR_TYPE_IDS = {v: k for k, v in SENSOR_TYPE_NAMES.items()}

OUTCOMES = ("ok", "skipped", "failed")


@dataclass(frozen=True, slots=True)
class RecordingRef:
    """Where a recording is and what the source metadata says about it.

    ``uri`` is a local path or any fsspec URL; for folder formats (CTF ``.ds``, EGI ``.mff``)
    it is the folder. Sidecar-derived fields are ``None``/empty when unknown.
    """

    uri: str
    format: str | None = None  # reader key (see brainomni.readers.formats); None = detect
    dataset: str = ""
    dataset_version: str = ""
    relpath: str = ""  # path relative to the dataset root (stable id input)
    subject: str = ""
    session: str = ""
    task: str = ""
    run: str = ""
    acquisition: str = ""
    modality: str = ""  # "eeg", "meg" or "" (unknown); set by crawlers
    line_freq: float | None = None  # Hz, from BIDS PowerLineFrequency when known
    bad_channels: tuple[str, ...] = ()  # from BIDS channels.tsv status=bad
    channel_types: tuple[tuple[str, str], ...] = ()  # BIDS channels.tsv (name, TYPE) pairs
    electrodes_uri: str | None = None  # BIDS electrodes.tsv (with coordsystem.json beside it)
    size: int | None = None  # bytes (sum over companion files for multi-file formats)
    checksum: str | None = None  # content checksum or ETag (+ "+fixes-<hash>", see fixes)
    extra: tuple[tuple[str, str], ...] = ()  # participants.tsv fields, TUH montage, ...
    # The dataset's catalog channel fixes (rename/exclude/reference/montage) as canonical
    # JSON (brainomni.sensors.fixes.ChannelFixes.to_json); "" = none. Attached by the crawl,
    # which also suffixes ``checksum`` with their hash so a changed fix redoes the recording.
    fixes: str = ""

    @property
    def recording_id(self) -> str:
        """Stable id from (dataset, version, relative path); the uri when those are unknown."""
        key = f"{self.dataset}\x1f{self.dataset_version}\x1f{self.relpath or self.uri}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A channel that was not kept, and why."""

    name: str
    reason: str


@dataclass(slots=True)
class SensorTable:
    """Kept channels of one recording.

    ``pos`` in metres (device/head coordinates as the file gives them), ``ori`` unit vectors
    for MEG and zeros for EEG, ``types`` int8 in {EEG, MAG, GRAD}.
    """

    names: list[str]
    types: np.ndarray  # (C,) int8
    pos: np.ndarray  # (C, 3) float32, metres
    ori: np.ndarray  # (C, 3) float32
    pos_source: list[str]  # per channel: "file", "electrodes.tsv", "montage:standard_1005"
    picks: np.ndarray  # (C,) int indices into the source recording's channels
    dropped: list[Dropped] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        for name, arr, shape in (
            ("types", self.types, (n,)),
            ("pos", self.pos, (n, 3)),
            ("ori", self.ori, (n, 3)),
            ("picks", self.picks, (n,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"SensorTable.{name} has shape {arr.shape}, expected {shape}")
        if len(self.pos_source) != n:
            raise ValueError("SensorTable.pos_source must have one entry per channel")

    def __len__(self) -> int:
        return len(self.names)

    def count(self, sensor_type: int) -> int:
        return int(np.sum(self.types == sensor_type))

    def summary(self) -> dict[str, int]:
        return {SENSOR_TYPE_NAMES[t]: self.count(t) for t in (EEG, MAG, GRAD)}

    def as_rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows (used by ``brainomni inspect --json``)."""
        return [
            {
                "name": n,
                "type": SENSOR_TYPE_NAMES[int(t)],
                "pos": [round(float(v), 6) for v in p],
                "ori": [round(float(v), 6) for v in o],
                "pos_source": s,
            }
            for n, t, p, o, s in zip(
                self.names, self.types, self.pos, self.ori, self.pos_source, strict=True
            )
        ]
