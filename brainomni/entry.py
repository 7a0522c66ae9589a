"""What every entry point shares: one logging setup (with secrets redacted), the retry-window
option, and one line plus a documented exit code for object-storage errors.

Used by ``brainomni`` (:mod:`brainomni.cli`) and by ``pipelines/*.py``. Library modules only
call ``logging.getLogger(__name__)``; they never configure logging.

Exit codes of every tool (0, 1 and 2 keep their per-tool meaning: done / the checked thing
does not hold or a recording failed / usage):

* :data:`EXIT_STORAGE_UNREACHABLE` (3): the object store could not be reached (connection
  refused or reset, timeouts, HTTP 5xx or throttling that outlasted the retry window).
  Retrying later may work.
* :data:`EXIT_STORAGE_REFUSED` (4): the store or the local configuration refused access
  (missing or wrong credentials, expired token, 401/403, unknown profile, TLS failure, an
  endpoint host that does not resolve). Retrying will not help; fix the configuration.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .io.redact import redact
from .io.retry import (  # noqa: F401  (storage errors: classified in brainomni.io.retry)
    DEFAULT_RETRY_S,
    EXIT_STORAGE_REFUSED,
    EXIT_STORAGE_UNREACHABLE,
    RETRY_ENV,
    storage_failure,
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that print request headers, signed URLs or credential responses at DEBUG.
SENSITIVE_LOGGERS = (
    "botocore",
    "boto3",
    "aiobotocore",
    "s3fs",
    "fsspec",
    "urllib3",
    "aiohttp",
    "requests",
)
F = TypeVar("F", bound=Callable[..., int])

# --------------------------------------------------------------------------- logging


class RedactingFilter(logging.Filter):
    """Rewrites every record through :func:`brainomni.storage.redact` (message, traceback and
    stack text); never drops a record. Safe to attach to any logger or handler, repeatedly."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_brainomni_redacted", False):
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self._formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._brainomni_redacted = True
        return True


_FILTER = RedactingFilter()
_factory_installed = False


def install_redaction() -> None:
    """Attach the redacting filter to the root handlers, to the loggers of the storage
    libraries (:data:`SENSITIVE_LOGGERS`) and their handlers, and redact records as they are
    created (which also covers handlers added later, e.g. by Ray or pytest). Idempotent."""
    global _factory_installed
    names = [
        n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in SENSITIVE_LOGGERS
    ]
    loggers = [logging.getLogger(n) for n in (*SENSITIVE_LOGGERS, *names)]
    for lg in (logging.getLogger(), *loggers):
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)
    if not _factory_installed:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def setup_logging(level: int | str = logging.WARNING) -> None:
    """The one logging setup of an entry point: a stderr handler on the root logger at
    ``level`` (as :func:`logging.basicConfig`: nothing changes when the root logger already
    has handlers, e.g. under pytest or Ray), and credentials redacted at every level, DEBUG
    included, on every handler (:func:`install_redaction`)."""
    if isinstance(level, str):
        name = level.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise SystemExit(f"--log-level {level!r}: use DEBUG, INFO, WARNING or ERROR")
        level = logging.getLevelName(name)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    install_redaction()


# --------------------------------------------------------------------------- retry window


def add_storage_retry_argument(p: argparse.ArgumentParser) -> None:
    """``--storage-retry-s SECONDS`` (the object-store retry window, see README)."""
    p.add_argument(
        "--storage-retry-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"how long transient object-store errors are retried before the work fails "
        f"(default ${RETRY_ENV} or {DEFAULT_RETRY_S:g})",
    )


def apply_storage_retry(seconds: float | None) -> None:
    """Set the retry window for this process and the workers it starts (``$RETRY_ENV``)."""
    if seconds is None:
        return
    if not seconds >= 0 or seconds == float("inf"):
        raise SystemExit(f"--storage-retry-s {seconds}: give a number of seconds >= 0")
    os.environ[RETRY_ENV] = f"{seconds:g}"


def entrypoint(main: F) -> F:
    """Wrap an entry point's ``main``: a storage error prints one line to stderr and returns
    its exit code (3 or 4) instead of a traceback; anything else propagates unchanged."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            found = storage_failure(exc)
            if found is None:
                raise
            code, line = found
            print(line, file=sys.stderr)
            return code

    return wrapper  # type: ignore[return-value]
