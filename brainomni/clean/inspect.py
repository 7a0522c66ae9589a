"""The report of cleaning one recording: :class:`PreprocessResult` and its JSON.

What ``brainomni inspect`` / ``brainomni preprocess`` print (``--json``: :meth:`to_json`;
``--plot``: :func:`brainomni.qc_plot.plot_qc` draws the same JSON) and what the ingest task
turns into a ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import SensorTable


@dataclass
class PreprocessResult:
    """The outcome of cleaning one recording."""

    uri: str
    outcome: str = "ok"
    reason: str = ""
    error_class: str | None = None
    recording_id: str = ""
    fmt: str | None = None
    reader: str | None = None
    sfreq: float | None = None  # input rate, Hz
    duration_s: float | None = None  # input duration
    table: SensorTable | None = None
    qc: dict[str, Any] = field(default_factory=dict)
    store: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    bytes_in: int | None = None
    transient: bool = False  # a failure caused by a passing object-store error
    sidecars: dict[str, Any] = field(default_factory=dict)  # how electrodes.tsv was read
    fixes: dict[str, Any] = field(default_factory=dict)  # catalog channel fixes applied

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``brainomni inspect --json``."""
        return {
            "uri": self.uri,
            "recording_id": self.recording_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "error_class": self.error_class,
            "format": self.fmt,
            "reader": self.reader,
            "sfreq": self.sfreq,
            "duration_s": self.duration_s,
            "channels": self.table.as_rows() if self.table is not None else [],
            "summary": self.table.summary() if self.table is not None else {},
            "dropped": [{"name": d.name, "reason": d.reason} for d in self.table.dropped]
            if self.table is not None
            else [],
            "qc": self.qc,
            "fixes": self.fixes,
            "store": self.store,
            "timings": self.timings,
        }
