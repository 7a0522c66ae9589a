"""What every entry point shares: the retry-window option, and one line plus a documented exit
code for object-storage errors (the logging setup and the option vocabulary are in
:mod:`brainomni.cli_common`; storage errors are classified in :mod:`brainomni.io.retry`).

Used by ``brainomni`` (:mod:`brainomni.cli`), which ``pipelines/*.py`` wrap. Library modules
only call ``logging.getLogger(__name__)``; they never configure logging.

Exit codes of every tool (0, 1 and 2 keep their per-tool meaning: done / the checked thing
does not hold or a recording failed / usage):

* :data:`brainomni.io.retry.EXIT_STORAGE_UNREACHABLE` (3): the object store could not be reached (connection
  refused or reset, timeouts, HTTP 5xx or throttling that outlasted the retry window).
  Retrying later may work.
* :data:`brainomni.io.retry.EXIT_STORAGE_REFUSED` (4): the store or the local configuration refused access
  (missing or wrong credentials, expired token, 401/403, unknown profile, TLS failure, an
  endpoint host that does not resolve). Retrying will not help; fix the configuration.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .io.retry import DEFAULT_RETRY_S, RETRY_ENV, storage_failure

F = TypeVar("F", bound=Callable[..., int])

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
