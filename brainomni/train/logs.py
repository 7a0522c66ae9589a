"""Run metrics on rank 0: ``metrics.jsonl`` always, TensorBoard when it is installed.

A resumed run redoes the steps after its checkpoint, so :func:`truncate_logs` first drops
their records from ``metrics.jsonl`` and every ``samples-RRRRR.jsonl`` (an atomic rewrite):
each step is logged once, by the run whose state the checkpoints carry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def truncate_jsonl(path: Path, step: int) -> int:
    """Drop the records of ``path`` whose ``step`` is above ``step``; returns how many.

    Rewritten into a temporary file that replaces ``path`` (a crash leaves the old or the
    new file, never half of one). Lines that are not a JSON object with an integer
    ``step`` are kept as they are, except a torn last line (no newline: the write of a
    killed run), which is dropped with a warning."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn:
        log.warning("%s: dropping its torn last line %r", path, torn[:80])
    keep, dropped = [], 0
    for line in lines:
        try:
            rec = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        s = rec.get("step") if isinstance(rec, dict) else None
        if type(s) is int and s > step:
            dropped += 1
        else:
            keep.append(line + b"\n")
    if dropped or torn:
        from ..io.commit import atomic_write_bytes

        atomic_write_bytes(str(path), b"".join(keep))
    return dropped


def truncate_logs(out: Path, step: int) -> None:
    """Rank 0 of a resumed run at ``step``: ``metrics.jsonl`` and every rank's samples log
    (ranks of the old run included) keep the records up to ``step``."""
    for p in [out / METRICS, *sorted(out.glob("samples-*.jsonl"))]:
        n = truncate_jsonl(p, step)
        if n:
            log.info("%s: dropped %d records after step %d (redone by this resume)", p, n, step)


class MetricsLog:
    """Rank 0: ``metrics.jsonl`` always, TensorBoard when installed. ``purge_after``: a
    resumed run's step; TensorBoard discards its events after it (``purge_step``)."""

    def __init__(self, out: Path, enabled: bool, purge_after: int | None = None) -> None:
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.fh = open(out / METRICS, "a", buffering=1)  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if purge_after is None else purge_after + 1
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=purge)
        except ImportError:
            log.warning(
                "tensorboard is not installed: metrics go to metrics.jsonl only "
                "(pip install tensorboard)"
            )

    def write(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps({"kind": kind, "step": step, **values}, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()
