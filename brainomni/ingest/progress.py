"""Progress of a running ingest: recordings/s, hours/s and ETA, logged periodically."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from .ledger import ALREADY_DONE, LedgerRow

logger = logging.getLogger(__name__)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts finished recordings; :meth:`update` logs a line at most every ``every_s``.

    Rates count only recordings processed in this run (not those found already done), so
    the ETA reflects real work. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        total: int,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.total = total
        self.every_s = every_s
        self.clock = clock
        self.emit = emit or logger.info
        self.t0 = clock()
        self._last = self.t0
        self.done = 0
        self.worked = 0  # processed in this run (not "already done")
        self.hours = 0.0
        self.outcomes: Counter[str] = Counter()

    def update(self, row: LedgerRow) -> None:
        self.done += 1
        self.outcomes[row.outcome] += 1
        if row.reason != ALREADY_DONE:
            self.worked += 1
            self.hours += row.output_hours
        now = self.clock()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            self.emit(self.line())

    def rates(self) -> tuple[float, float, float | None]:
        """(recordings/s, hours of signal per s, ETA in s or None)."""
        elapsed = max(self.clock() - self.t0, 1e-9)
        rec_s = self.worked / elapsed
        left = self.total - self.done
        eta = left / rec_s if rec_s > 0 else (0.0 if left == 0 else None)
        return rec_s, self.hours / elapsed, eta

    def line(self) -> str:
        rec_s, hours_s, eta = self.rates()
        by = " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"ingest {self.done}/{self.total} [{by}] {rec_s:.2f} rec/s "
            f"{hours_s * 3600:.1f} h/h ({hours_s:.4f} h/s) ETA {_fmt_eta(eta)}"
        )
