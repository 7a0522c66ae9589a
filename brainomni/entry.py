"""What every entry point shares: the retry-window option, and one line plus a documented exit
code for object-storage errors (the logging setup and the option vocabulary are in
:mod:`brainomni.cli_common`; re-exported here).

Used by ``brainomni`` (:mod:`brainomni.cli`), which ``pipelines/*.py`` wrap. Library modules
only call ``logging.getLogger(__name__)``; they never configure logging.

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
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .cli_common import (  # noqa: F401 - the logging setup lives there; re-exported
    LOG_FORMAT,
    SENSITIVE_LOGGERS,
    RedactingFilter,
    install_redaction,
    setup_logging,
)
from .retries import _chain  # one walk of the cause chain (retries classifies it too)
from .storage import (
    DEFAULT_RETRY_S,
    RETRY_ENV,
    StorageUnavailable,
    endpoint_description,
    is_refused,
    is_transient,
    redact,
)

EXIT_STORAGE_UNREACHABLE = 3
EXIT_STORAGE_REFUSED = 4
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


# --------------------------------------------------------------------------- storage errors


_STORAGE_MODULES = ("botocore", "aiobotocore", "s3fs", "aiohttp", "urllib3", "ssl", "socket")


def _from_storage(chain: list[BaseException]) -> bool:
    """True when the error came out of an object-store client (not, e.g., a local folder)."""
    for e in chain:
        if isinstance(e, StorageUnavailable):
            return True
        if any(
            (cls.__module__ or "").split(".")[0] in _STORAGE_MODULES for cls in type(e).__mro__[:-2]
        ):
            return True
    return False


def _endpoint(chain: list[BaseException], given: str | None) -> str:
    for e in chain:
        url = (getattr(e, "kwargs", None) or {}).get("endpoint_url")
        if isinstance(url, str) and "://" in url:
            parts = urlsplit(url)
            return redact(f"{parts.scheme}://{parts.netloc}")
    return redact(given) if given else endpoint_description()


def _one_line(text: str, limit: int = 800) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storage_failure(exc: BaseException, *, endpoint: str | None = None) -> tuple[int, str] | None:
    """``(exit code, one line naming the endpoint and the fix)`` for an error about reaching
    object storage, else ``None`` (any other error keeps its traceback). ``endpoint``: the
    one the tool was given, when the error does not name it."""
    chain = _chain(exc)
    invalid = next(
        (e for e in chain if isinstance(e, ValueError) and str(e).startswith("Invalid endpoint")),
        None,
    )
    if invalid is not None:
        return EXIT_STORAGE_REFUSED, _one_line(
            f"error: {invalid}. Fix: give a full URL such as http://host:9000 "
            "(--endpoint-url, AWS_ENDPOINT_URL or storage_options endpoint_url)"
        )
    if not _from_storage(chain):
        return None
    endpoint = _endpoint(chain, endpoint)
    last = chain[-1]
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return EXIT_STORAGE_REFUSED, _one_line(
            f"error: no usable AWS credentials for {endpoint} ({type(last).__name__}: {last}). "
            "Fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) or "
            "AWS_PROFILE, or use --anon (storage option anon=true) for a public bucket"
        )
    if "ProfileNotFound" in names:
        return EXIT_STORAGE_REFUSED, _one_line(
            f"error: {last}. Fix: name a profile of ~/.aws/config (AWS_PROFILE or the profile "
            "storage option)"
        )
    if any(type(e).__name__ == "gaierror" for e in chain) and is_refused(exc):
        return EXIT_STORAGE_REFUSED, _one_line(
            f"error: the object-storage endpoint {endpoint} does not resolve "
            f"({type(last).__name__}: {last}). Fix: check --endpoint-url / AWS_ENDPOINT_URL"
        )
    if is_refused(exc):
        if any(n in names for n in ("SSLError", "SSLCertVerificationError")):
            fix = "check the endpoint's TLS certificate (AWS_CA_BUNDLE) or use its http:// URL"
        else:
            fix = (
                "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                "AWS_SESSION_TOKEN or AWS_PROFILE; an expired session token?), the bucket "
                "policy, or use --anon for a public bucket"
            )
        return EXIT_STORAGE_REFUSED, _one_line(
            f"error: object storage at {endpoint} refused access "
            f"({type(last).__name__}: {last}). Fix: {fix}"
        )
    su = next((e for e in chain if isinstance(e, StorageUnavailable)), None)
    if su is not None:
        return EXIT_STORAGE_UNREACHABLE, _one_line(f"error: {su}")
    if is_transient(exc):
        return EXIT_STORAGE_UNREACHABLE, _one_line(
            f"error: object storage at {endpoint} is unreachable ({type(last).__name__}: "
            f"{last}). Fix: check the endpoint (--endpoint-url / AWS_ENDPOINT_URL) and the "
            f"network; outages shorter than the retry window (${RETRY_ENV}, "
            "--storage-retry-s) are retried"
        )
    return None


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
