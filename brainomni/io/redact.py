"""Credentials out of everything that is logged or stored: URLs, mappings, messages.

:func:`redact` is applied to every log line, error message and ledger field that may carry a
URL or a request dump; :class:`brainomni.cli_common.RedactingFilter` applies it to every log record
(botocore's DEBUG request dumps included).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_SECRET_KEY_RE = re.compile(r"(key|secret|token|password|passwd|credential|signature|auth)", re.I)
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET_RE = re.compile(
    r"(?P<k>[?&](?:X-Amz-(?:Signature|Credential|Security-Token)|AWSAccessKeyId|Signature|"
    r"sig|token|access_token|key|secret))=[^&\s]*",
    re.I,
)
# Credentials as botocore, s3fs and HTTP libraries print them in DEBUG logs and errors:
# header dumps ('Authorization': b'AWS4-HMAC-SHA256 Credential=AKID/..., Signature=...',
# 'X-Amz-Security-Token': b'...'), canonical requests (x-amz-security-token:VALUE), STS and
# instance-metadata responses ("SecretAccessKey": "...", <SessionToken>...</SessionToken>),
# config-style lines (aws_secret_access_key = ...) and AWS key id shapes.
_HEADER_SECRET_RE = re.compile(
    r"(?P<k>\b(?:authorization|proxy-authorization|x-amz-security-token|x-amz-credential|"
    r"x-amz-signature)\b['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n&]+",
    re.I,
)
_CREDENTIAL_PARAM_RE = re.compile(r"(?P<k>\b(?:Credential|Signature)=)[^&\s,'\"]+", re.I)
_FIELD_SECRET_RE = re.compile(
    r"(?P<k>['\"]?\b(?:AccessKeyId|SecretAccessKey|SessionToken|(?-i:Token)|aws_access_key_id|"
    r"aws_secret_access_key|aws_session_token|aws_security_token)\b['\"]?\s*[:=]\s*b?['\"]?)"
    r"[^'\"\s,<}&]+",
    re.I,
)
_XML_SECRET_RE = re.compile(
    r"<(?P<t>AccessKeyId|SecretAccessKey|SessionToken|Token)>[^<]*</(?P=t)>", re.I
)
_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{12,}\b")
REDACTED = "***"
_EXTRA_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Also redact this literal value everywhere (e.g. a token obtained at run time)."""
    if isinstance(value, str) and len(value) >= 4:
        _EXTRA_SECRETS.add(value)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` safe to log: credentials in URLs, mappings and text replaced.

    Strings lose URL user-info (``s3://KEY:SECRET@bucket``), signed-URL query parameters,
    ``Authorization``/``X-Amz-Security-Token``/``X-Amz-Credential`` header values, credential
    fields of STS/metadata responses, AWS access key ids, and any literal value of
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` from the environment
    (or given to :func:`register_secret`). Mappings lose the values of credential-like keys (recursively).
    """
    if isinstance(obj, str):
        text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{REDACTED}@", obj)
        text = _QUERY_SECRET_RE.sub(lambda m: f"{m['k']}={REDACTED}", text)
        text = _HEADER_SECRET_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _CREDENTIAL_PARAM_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _FIELD_SECRET_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _XML_SECRET_RE.sub(lambda m: f"<{m['t']}>{REDACTED}</{m['t']}>", text)
        text = _KEY_ID_RE.sub(REDACTED, text)
        values = [os.environ.get(var) for var in _SECRET_ENV] + sorted(_EXTRA_SECRETS)
        for value in values:
            if value and len(value) >= 4:
                text = text.replace(value, REDACTED)
        return text
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY_RE.search(k) else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def describe_error(exc: BaseException) -> str:
    """``"ClassName: message"`` with credentials redacted (for ledgers and logs)."""
    return redact(f"{type(exc).__name__}: {exc}")


__all__ = ["REDACTED", "describe_error", "redact", "register_secret"]
