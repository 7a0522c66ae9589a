"""Credentials never reach the logs, at any level (issue #15, defect 11).

Canary credentials live in an AWS profile (not in the environment, so the literal-value
redaction of ``AWS_*`` variables cannot be what hides them: the header and field patterns
must). Requests go through s3fs to the moto server over HTTP with every logger at DEBUG,
where botocore prints request headers (``Authorization: ... Credential=KEYID/...``,
``X-Amz-Security-Token``) and canonical requests. Before: both canaries were in the log.
"""

from __future__ import annotations

import io
import logging

import pytest

from brainomni.cli_common import LOG_FORMAT, setup_logging
from brainomni.io.fs import get_fs
from brainomni.io.redact import redact

# Not shaped like AWS key ids (AKIA...), so only the header/field redaction can catch them.
CANARY_KEY_ID = "CANARYKEYID7Q3X9Z2W1"
CANARY_SECRET = "canary-secret-9f8e7d6c5b4a3210fedcba98"
CANARY_TOKEN = "canary-session-token-0a1b2c3d4e5f6a7b8c9d"
CANARIES = (CANARY_KEY_ID, CANARY_SECRET, CANARY_TOKEN)


@pytest.fixture
def canary_profile(s3_server, tmp_path, monkeypatch) -> str:
    creds = tmp_path / "credentials"
    creds.write_text(
        "[canary]\n"
        f"aws_access_key_id = {CANARY_KEY_ID}\n"
        f"aws_secret_access_key = {CANARY_SECRET}\n"
        f"aws_session_token = {CANARY_TOKEN}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "canary")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield "canary"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def debug_log():
    """Everything logged at DEBUG, through a root handler like the CLI's."""
    root = logging.getLogger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_debug_logs_of_real_s3_requests_hold_no_credentials(
    canary_profile, s3_server, debug_log, caplog, capfd
):
    setup_logging("DEBUG")  # the entry points' one setup: installs the redaction
    bucket = s3_server.make_bucket("canary").removeprefix("s3://")
    fs, _ = get_fs(f"s3://{bucket}", {"profile": canary_profile})
    with caplog.at_level(logging.DEBUG):
        fs.pipe_file(f"{bucket}/a.bin", b"payload")
        assert fs.cat_file(f"{bucket}/a.bin") == b"payload"
        fs.ls(bucket)
        # a message built by the user's own code, and a traceback carrying a header dump
        logging.getLogger("brainomni.test").debug("token %s", {"aws_session_token": CANARY_TOKEN})
        try:
            raise RuntimeError(f"headers={{'X-Amz-Security-Token': b'{CANARY_TOKEN}'}}")
        except RuntimeError:
            logging.getLogger("s3fs").exception("request failed")
    cap = capfd.readouterr()
    text = debug_log.getvalue() + caplog.text + cap.out + cap.err
    # the test is meaningful only if botocore did log the signed requests
    assert "Authorization" in text and "x-amz-security-token" in text.lower()
    assert "request failed" in text and "Traceback" in text
    for canary in CANARIES:
        assert canary not in text


def test_redact_covers_the_forms_botocore_and_sts_print():
    samples = [
        f"headers={{'X-Amz-Security-Token': b'{CANARY_TOKEN}', 'Authorization': "
        f"b'AWS4-HMAC-SHA256 Credential={CANARY_KEY_ID}/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0a1b'}",
        f"GET\n/b\n\nhost:x\nx-amz-security-token:{CANARY_TOKEN}\n\nhost;x-amz-security-token",
        f'{{"AccessKeyId": "{CANARY_KEY_ID}", "SecretAccessKey": "{CANARY_SECRET}", '
        f'"Token": "{CANARY_TOKEN}"}}',
        f"<SessionToken>{CANARY_TOKEN}</SessionToken><AccessKeyId>{CANARY_KEY_ID}</AccessKeyId>",
        f"https://b.s3/k?X-Amz-Credential={CANARY_KEY_ID}%2F2026&X-Amz-Security-Token={CANARY_TOKEN}",
        f"aws_secret_access_key = {CANARY_SECRET}",
    ]
    for text in samples:
        clean = redact(text)
        assert all(c not in clean for c in CANARIES), clean
    assert redact("AKIAIOSFODNN7EXAMPLE") == "***"
    assert redact("token: 512 windows") == "token: 512 windows"  # plain words stay
