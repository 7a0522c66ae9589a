"""Progress of a running stage: units/s, hours/s (when rows carry ``output_hours``) and ETA,
logged at most every ``every_s`` seconds."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .ledger import ALREADY_DONE

logger = logging.getLogger(__name__)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts finished units; :meth:`update` logs a line at most every ``every_s``.

    Rates count only units processed in this run (not those found already done), so the
    ETA reflects real work. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        total: int,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
        label: str = "ingest",
        unit: str = "rec",
    ) -> None:
        self.total = total
        self.every_s = every_s
        self.clock = clock
        self.emit = emit or logger.info
        self.label, self.unit = label, unit
        self.t0 = clock()
        self._last = self.t0
        self.done = 0
        self.worked = 0  # processed in this run (not "already done")
        self.hours = 0.0
        self.outcomes: Counter[str] = Counter()

    def update(self, row: Any) -> None:
        self.done += 1
        self.outcomes[row.outcome] += 1
        if row.reason != ALREADY_DONE:
            self.worked += 1
            self.hours += getattr(row, "output_hours", 0.0) or 0.0
        now = self.clock()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            self.emit(self.line())

    def rates(self) -> tuple[float, float, float | None]:
        """(units/s, hours of signal per s, ETA in s or None)."""
        elapsed = max(self.clock() - self.t0, 1e-9)
        rate = self.worked / elapsed
        left = self.total - self.done
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        return rate, self.hours / elapsed, eta

    def line(self) -> str:
        rate, hours_s, eta = self.rates()
        by = " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        hours = f"{hours_s * 3600:.1f} h/h ({hours_s:.4f} h/s) " if self.hours else ""
        return (
            f"{self.label} {self.done}/{self.total} [{by}] {rate:.2f} {self.unit}/s "
            f"{hours}ETA {_fmt_eta(eta)}"
        )
