"""Outcome exceptions raised inside a recording's processing.

They are data, not crashes: the per-recording entry point turns them into an outcome row
(``skipped`` with a reason, or ``failed`` with a reason and an error class). Anything else
that escapes is a programming error and propagates.
"""

from __future__ import annotations


class RecordingOutcome(Exception):
    """Base class: a recording that does not end as ``ok``."""

    outcome = "failed"

    def __init__(self, reason: str, *, error_class: str | None = None, transient: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class or type(self).__name__
        self.transient = transient  # caused by a passing object-store error: worth a retry


class SkipRecording(RecordingOutcome):
    """The recording is legitimately not usable (no signal, too short, too few sensors...)."""

    outcome = "skipped"


class RecordingFailed(RecordingOutcome):
    """The recording could not be read or processed (corrupt, truncated, missing companion)."""

    outcome = "failed"


class MissingDependency(ImportError):
    """An optional dependency is missing; the message names the exact install line."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingDependency` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        raise MissingDependency(
            f"{module!r} is needed here; install it with: pip install 'brainomni[{extra}]'"
        ) from exc
