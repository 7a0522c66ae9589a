"""Narrow retries of object-store calls: which errors are transient, the retry window,
and :class:`StorageUnavailable` once it is spent; :func:`storage_failure` turns an error that
outlived them into one line and an exit code (3 unreachable, 4 refused) for entry points.

The window (``$BRAINOMNI_STORAGE_RETRY_S``, default 180 s) starts at a call's first failed
try; nested calls share it. The clock (``_now``/``_sleep``) is module state so that tests can
run the same logic on a virtual clock.

Size: a little over 400 lines: the retry loop and the exit-code mapping read the same
classification of storage errors (transient, refused), kept in one module so they cannot
disagree.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .redact import describe_error, redact

logger = logging.getLogger("brainomni.io")  # one logger name for every storage message

T = TypeVar("T")

RETRY_ENV = "BRAINOMNI_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 180.0  # seconds: the window a transient outage may last before work fails


class StorageUnavailable(ConnectionError):
    """The object store stayed unreachable (or kept failing transiently) for the whole retry
    window. A ``ConnectionError`` (hence ``OSError``), so existing ``except OSError`` still
    catches it; ingest turns it into a ``failed`` row with this class name."""


_TRANSIENT_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ClientOSError",
        "FSTimeoutError",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.EAGAIN,
    }
)
# Errors that retrying cannot fix: the request reached the store and was refused, or the
# configuration is wrong (credentials, profile, TLS, a host name that does not resolve).
_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AccountProblem",
        "InvalidSecurity",
        "UnrecognizedClientException",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)
_REFUSED_NAMES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "ProfileNotFound",
        "ConfigNotFound",
        "InvalidConfigError",
        "UnauthorizedSSOTokenError",
        "SSOTokenLoadError",
        "TokenRetrievalError",
        "SSLError",
        "SSLCertVerificationError",
        "ClientConnectorCertificateError",
        "InvalidEndpointConfigurationError",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts (s3fs and botocore wrap the original error)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not e for e in out):
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _response(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def _is_refused_one(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError):
        return True
    if any(cls.__name__ in _REFUSED_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
        return True  # a host name that does not resolve: a wrong endpoint, not an outage
    code, status = _response(exc)
    return code in _REFUSED_CODES or status in (401, 403)


def _is_transient_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    code, status = _response(exc)
    if code in _TRANSIENT_CODES or code in ("500", "502", "503", "504", "429"):
        return True
    if status is not None and (status >= 500 or status == 429):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def is_refused(exc: BaseException) -> bool:
    """True when the store (or the local configuration) refused access: credentials,
    permissions, profile, TLS, an unresolvable endpoint host. Never worth a retry."""
    return any(_is_refused_one(e) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """True for object-store errors worth retrying: connection refused/reset/closed, timeouts,
    HTTP 5xx and 429, throttling (SlowDown, Throttling...).

    s3fs turns botocore errors into ``OSError`` subclasses and keeps the original as
    ``__cause__``, so the whole cause chain is inspected. Refusals (see :func:`is_refused`:
    401/403, bad or missing credentials, unresolvable host), not-found and decoding errors
    are permanent, even when wrapped in an error that looks transient.
    """
    chain = _chain(exc)
    if any(
        isinstance(e, (FileNotFoundError, IsADirectoryError)) or _is_refused_one(e) for e in chain
    ):
        return False
    return any(_is_transient_one(e) for e in chain)


def _env_retry_s() -> float:
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{RETRY_ENV}={raw!r} is not a number of seconds >= 0; set it to e.g. 180 "
            "(the retry window for object-store outages) or unset it"
        )
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry transient errors for up to ``total_s`` seconds (the retry window), with
    exponential backoff and equal jitter: after failed try ``n`` it sleeps between half and
    all of ``min(max_delay, base_delay * 2**n)``, never past the window's end; the last try
    is made at the end of the window.

    ``total_s`` defaults to ``$BRAINOMNI_STORAGE_RETRY_S`` (else 180 s). ``attempts``
    optionally caps the number of tries as well (``None``: only the window counts).
    """

    total_s: float = field(default_factory=_env_retry_s)
    base_delay: float = 0.5  # seconds
    max_delay: float = 30.0  # seconds, cap on one sleep
    attempts: int | None = None  # total tries, the first included

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1 or None, got {self.attempts}")
        if not self.total_s >= 0:
            raise ValueError(f"RetryPolicy.total_s must be >= 0 seconds, got {self.total_s}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("RetryPolicy needs 0 <= base_delay <= max_delay")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed try number ``attempt`` (0-based), before the cap
        by the window's end."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(attempt, 64)))
        return ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)


# The retry clock: module attributes so that tests can run the same logic on a virtual
# clock (``monkeypatch.setattr(storage, "_now", ...)``, ``..., "_sleep", ...``).
_now: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep
# The deadline of the retry call this one runs inside (nested retries share one window).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "brainomni_io_deadline", default=None
)


def retry(
    fn: Callable[[], T],
    policy: RetryPolicy | None = None,
    *,
    what: str = "",
    sleep: Callable[[float], None] | None = None,
    classify: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fn()``; on a transient error (see :func:`is_transient`) retry with backoff.

    A permanent error propagates at once. The window (``policy.total_s``) starts at the first
    failed try: an outage shorter than the window ends in success, however long ``fn`` ran
    before it. When the window is spent (or ``policy.attempts`` tries are made),
    :class:`StorageUnavailable` is raised from the last error. Nested calls share one
    window: a retry inside ``fn`` ends no later than this one, and a
    :class:`StorageUnavailable` raised inside ``fn`` propagates without a second window.
    ``what`` names the operation in log lines (redacted).
    """
    policy = policy or RetryPolicy()
    pause_fn = sleep or _sleep
    outer = _DEADLINE.get()
    label = redact(what) or "storage call"
    first: float | None = None  # time of the first failure
    deadline: float | None = outer
    tries = 0
    while True:
        token = _DEADLINE.set(deadline)
        try:
            return fn()
        except StorageUnavailable:
            raise  # a retry inside fn already waited a whole window for this outage
        except Exception as exc:
            if not classify(exc):
                raise
            tries += 1
            now = _now()
            if first is None:
                first = now
                own = now + policy.total_s
                deadline = own if outer is None else min(own, outer)
            left = deadline - now
            if left <= 0 or (policy.attempts is not None and tries >= policy.attempts):
                raise StorageUnavailable(
                    f"object storage unavailable for {now - first:.0f} s ({tries} tries) "
                    f"on {label}: {describe_error(exc)}. Fix: check the endpoint "
                    f"({endpoint_description()}) and the network, or rerun later; the retry window is "
                    f"{policy.total_s:g} s (${RETRY_ENV} or --storage-retry-s)"
                ) from exc
            pause = min(policy.delay(tries - 1), left)
            logger.warning(
                "transient storage error on %s (try %d, %.0f s of the %g s window left), "
                "retrying in %.2fs: %s",
                label,
                tries,
                left,
                policy.total_s,
                pause,
                describe_error(exc),
            )
        finally:
            _DEADLINE.reset(token)
        pause_fn(pause)


def endpoint_description(storage_options: Mapping[str, Any] | None = None) -> str:
    """The S3 endpoint in use, for messages: options, then the environment, else AWS."""
    so = dict(storage_options or {})
    url = (
        so.get("endpoint_url")
        or (so.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    return redact(str(url)) if url else "AWS S3 (no AWS_ENDPOINT_URL set)"


# --------------------------------------------------------------------------- exit codes

EXIT_STORAGE_UNREACHABLE = 3
EXIT_STORAGE_REFUSED = 4
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


__all__ = [
    "DEFAULT_RETRY_S",
    "EXIT_STORAGE_REFUSED",
    "EXIT_STORAGE_UNREACHABLE",
    "RETRY_ENV",
    "RetryPolicy",
    "StorageUnavailable",
    "endpoint_description",
    "is_refused",
    "is_transient",
    "retry",
    "storage_failure",
]
