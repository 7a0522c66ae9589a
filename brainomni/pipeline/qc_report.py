"""An example stage, and a useful one: a per-store QC report of a corpus (~30 lines).

Its input is the frozen list of an ingest destination's ``ok`` rows; each unit reads one
store's first minute and writes ``DEST/qc/<recording_id>.json`` (channels per sensor type,
median channel RMS, flat channels) atomically; the core adds the ledger, resume, progress
and ``DEST/summary.json`` under either executor::

    from brainomni.pipeline import run_stage
    from brainomni.pipeline.qc_report import QCReportStage

    run_stage(QCReportStage(corpus="ingest-out", dest="qc-out"), "ray")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from brainomni.io.commit import atomic_write_bytes
from brainomni.io.fs import join_url
from brainomni.io.redact import redact

from .stage import Stage, StageRow


@dataclass
class QCReportStage(Stage):
    name: ClassVar[str] = "qc-report"
    expected_errors: ClassVar[tuple] = (OSError, ValueError)  # a store gone or damaged
    corpus: str = ""  # an ingest destination
    dest: str = ""
    seconds: float = 60.0  # read per store
    storage_options: dict | None = None
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)

    def units(self) -> list[str]:
        from brainomni.ingest.ledger import ok_stores

        stores = ok_stores(self.corpus, self.storage_options)
        if stores is None:
            raise FileNotFoundError(f"{self.corpus} holds no ingest ledger: run the ingest")
        return stores

    def key(self, unit: str) -> str:
        return unit.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")

    def run_unit(self, unit: str, *, attempt: int, worker: str) -> StageRow:
        from brainomni.records import SENSOR_TYPE_NAMES
        from brainomni.stores.recording import open_recording

        g = open_recording(unit, self.storage_options)
        sfreq = g.attrs.get("sfreq")  # file content: checked, a bad store is a failed row
        if not (
            isinstance(sfreq, (int, float)) and sfreq > 0 and "signal" in g and "sensor_type" in g
        ):
            raise ValueError(f"{redact(unit)}: no sfreq, signal or sensor_type: re-ingest it")
        n = int(self.seconds * float(sfreq))
        x, types = np.asarray(g["signal"][:, :n], np.float64), np.asarray(g["sensor_type"][:])
        rms = np.sqrt(np.mean((x - x.mean(axis=1, keepdims=True)) ** 2, axis=1))
        report = {
            "store": redact(unit),
            "n_times": int(g["signal"].shape[1]),
            "seconds_read": x.shape[1],
        }
        for t in np.unique(types):
            r = rms[types == t]
            report[SENSOR_TYPE_NAMES.get(int(t), f"type{int(t)}")] = {
                "channels": int(r.size),
                "median_rms": float(np.median(r)),
                "flat": int(np.sum(r <= 1e-3 * np.median(r))),
            }
        body = json.dumps(report, sort_keys=True).encode()
        url = join_url(self.dest, "qc", f"{self.key(unit)}.json")
        atomic_write_bytes(url, body, dict(self.dest_storage_options))
        return StageRow(
            self.key(unit), outcome="ok", output=url, items=len(types), detail=body.decode()
        )
