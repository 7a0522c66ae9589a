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

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
