"""Storage helpers: keys, redaction, retries, atomic writes and the store commit protocol."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest

from brainomni.io import fs as storage
from brainomni.io.commit import (
    MARKER_NAME,
    AtomicFile,
    DirectoryCommit,
    atomic_write_bytes,
    clean_staging,
    is_complete,
    read_marker,
    remove_staging,
)
from brainomni.io.fs import get_fs, safe_key
from brainomni.io.redact import describe_error, redact
from brainomni.io.retry import RetryPolicy, StorageUnavailable, is_transient, retry

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def _s3fs_error(code: str, status: int) -> Exception:
    """The error as s3fs raises it: an OSError whose cause is botocore's ClientError."""
    from s3fs.errors import translate_boto_error

    return translate_boto_error(_client_error(code, status))


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs/path", "s3://b/k", "C:/x", "a\\b", ""])
def test_safe_key_rejects_escapes(key):
    with pytest.raises(ValueError):
        safe_key(key)


def test_safe_key_normalises():
    assert safe_key("./recordings//abc/./store.zarr/") == "recordings/abc/store.zarr"


def test_join_url_validates():
    assert storage.join_url("s3://b/root/", "recordings", "x") == "s3://b/root/recordings/x"
    with pytest.raises(ValueError):
        storage.join_url("s3://b/root", "../other")


# --------------------------------------------------------------------------- redaction


def test_redact_urls_mappings_and_env(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert redact("s3://AKIAX:pw@bucket/key") == "s3://***@bucket/key"
    signed = "https://h/b/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=abc&partNumber=1"
    out = redact(signed)
    assert "AKIA" not in out and "abc" not in out and "partNumber=1" in out
    assert redact(f"boom: {SECRET}") == "boom: ***"
    opts = {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://x", "aws_secret_access_key": "s"},
    }
    assert redact(opts) == {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://x", "aws_secret_access_key": "***"},
    }
    assert SECRET not in describe_error(RuntimeError(f"denied for {SECRET}"))


def test_get_fs_refuses_credentials_without_echoing_them():
    with pytest.raises(ValueError) as info:
        get_fs("s3://bucket/x", {"key": "AKIAEXAMPLE", "secret": SECRET})
    assert SECRET not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert "environment" in str(info.value)


def test_get_fs_endpoint_from_environment(monkeypatch):
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.s3_options({})["endpoint_url"] == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8")
    assert storage.s3_options({})["endpoint_url"] == "http://127.0.0.1:8"
    explicit = storage.s3_options({"client_kwargs": {"endpoint_url": "http://e"}, "anon": True})
    assert explicit == {"endpoint_url": "http://e", "anon": True}
    fs, path = get_fs("s3://openneuro.org/ds002721", {"anon": True})
    assert path == "openneuro.org/ds002721" and fs.anon


# --------------------------------------------------------------------------- retries


def test_transient_classification():
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(_s3fs_error("SlowDown", 503))
    assert is_transient(_s3fs_error("InternalError", 500))
    assert is_transient(_client_error("Throttling", 400))
    assert not is_transient(_s3fs_error("NoSuchKey", 404))
    assert not is_transient(_s3fs_error("AccessDenied", 403))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(ValueError("bad header"))
    assert not is_transient(OSError(errno.EINVAL, "invalid"))


def test_retry_recovers_from_transient_errors(caplog, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _s3fs_error("SlowDown", 503) if len(calls) == 1 else ConnectionResetError(SECRET)
        return "ok"

    with caplog.at_level(logging.WARNING, logger="brainomni.io"):
        out = retry(
            flaky,
            RetryPolicy(attempts=5, base_delay=0.1, max_delay=0.15),
            what=f"s3://k:{SECRET}@b/x",
            sleep=sleeps.append,
        )
    assert out == "ok" and len(calls) == 3 and len(sleeps) == 2
    assert all(0 <= s <= 0.15 for s in sleeps)
    assert "transient storage error" in caplog.text and SECRET not in caplog.text


def test_retry_does_not_retry_permanent_errors():
    calls = []

    def missing():
        calls.append(1)
        raise _s3fs_error("AccessDenied", 403)

    with pytest.raises(PermissionError):
        retry(missing, sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_gives_up_after_attempts():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionRefusedError("endpoint down")

    with pytest.raises(StorageUnavailable) as info:
        retry(down, RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), sleep=lambda s: None)
    assert len(calls) == 3 and isinstance(info.value.__cause__, ConnectionRefusedError)


def test_retry_policy_validates():
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=2.0, max_delay=1.0)
    assert RetryPolicy(base_delay=1.0, max_delay=4.0).delay(10) <= 4.0


def test_retry_on_real_s3_after_simulated_transient(s3_bucket):
    atomic_write_bytes(f"{s3_bucket}/obj", b"payload")
    fs, path = get_fs(f"{s3_bucket}/obj")
    failures = [_s3fs_error("ServiceUnavailable", 503)]

    def read():
        if failures:
            raise failures.pop()
        return fs.cat_file(path)

    assert retry(read, sleep=lambda s: None) == b"payload"


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_local(tmp_path):
    target = tmp_path / "a" / "b.json"
    atomic_write_bytes(str(target), b"one")
    atomic_write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]  # no temporary left


def test_atomic_write_s3(s3_bucket):
    atomic_write_bytes(f"{s3_bucket}/x/y.bin", b"\x00\x01")
    fs, path = get_fs(f"{s3_bucket}/x/y.bin")
    assert fs.cat_file(path) == b"\x00\x01"


# --------------------------------------------------------------------------- store commits


def _write_store(c: DirectoryCommit, payload: bytes = b"data") -> None:
    c.fs.makedirs(f"{c.path}/c/0", exist_ok=True)
    c.fs.pipe_file(f"{c.path}/zarr.json", b"{}")
    c.fs.pipe_file(f"{c.path}/c/0/0", payload)


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dest")
    return request.getfixturevalue("s3_bucket") + "/dest"


def _files(fs, root: str, key: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.split(f"/{key}/", 1)[1] for p in fs.find(f"{root}/{key}"))


def test_commit_publishes_with_marker_last(store_root):
    url = f"{store_root}/recordings/abc"
    assert read_marker(url) is None and not is_complete(url)
    with DirectoryCommit(url) as c:
        if c.local:
            assert os.path.basename(c.path).startswith(".abc.tmp-")
        _write_store(c)
        assert not is_complete(url)  # nothing visible before commit
        c.commit({"source_checksum": "etag:1", "config_hash": "cfg1", "hours": 0.5})
    assert read_marker(url)["hours"] == 0.5
    assert is_complete(url, source_checksum="etag:1", config_hash="cfg1")
    assert not is_complete(url, config_hash="cfg2")
    assert not is_complete(url, source_checksum="etag:2")
    fs, root = get_fs(store_root)
    assert _files(fs, root, "recordings/abc") == [MARKER_NAME, "c/0/0", "zarr.json"]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/recordings")) == ["abc"]


def test_failed_writer_publishes_nothing(store_root):
    url = f"{store_root}/recordings/bad"
    with pytest.raises(RuntimeError), DirectoryCommit(url) as c:
        _write_store(c)
        raise RuntimeError("reader crashed")
    with DirectoryCommit(url) as c:  # leaving without commit() publishes nothing either
        _write_store(c)
    fs, root = get_fs(store_root)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/recordings/bad") and read_marker(url) is None
    assert not fs.exists(f"{root}/recordings") or fs.ls(f"{root}/recordings") == []


def test_commit_replaces_partial_and_stale_stores(store_root):
    fs, root = get_fs(store_root)
    url = f"{store_root}/recordings/r1"
    # A store left half-written by a killed job: content but no marker.
    fs.makedirs(f"{root}/recordings/r1/c", exist_ok=True)
    fs.pipe_file(f"{root}/recordings/r1/c/stale", b"old")
    assert not is_complete(url)
    for cfg, payload in (("v1", b"first"), ("v2", b"second!")):
        with DirectoryCommit(url) as c:
            _write_store(c, payload)
            c.commit({"source_checksum": "s", "config_hash": cfg})
    assert _files(fs, root, "recordings/r1") == [MARKER_NAME, "c/0/0", "zarr.json"]
    assert fs.cat_file(f"{root}/recordings/r1/c/0/0") == b"second!"
    assert json.loads(fs.cat_file(f"{root}/recordings/r1/{MARKER_NAME}"))["config_hash"] == "v2"


def test_object_store_unpublishes_the_old_marker_first(s3_bucket, monkeypatch):
    """On an object store the old version stops being trusted before any object goes."""
    url = f"{s3_bucket}/dest/r"
    with DirectoryCommit(url) as c:
        _write_store(c)
        c.commit({"config_hash": "v1"})
    fs, root = get_fs(url)
    removed = []
    real_rm_file, real_rm = fs.rm_file, fs.rm

    def spy_file(path, **kw):
        removed.append(path)
        return real_rm_file(path, **kw)

    def spy_rm(path, **kw):
        removed.append(f"{path} (tree)")
        return real_rm(path, **kw)

    monkeypatch.setattr(fs, "rm_file", spy_file)  # get_fs returns this cached instance
    monkeypatch.setattr(fs, "rm", spy_rm)
    c = DirectoryCommit(url)  # unpublishes on open: nothing written yet
    monkeypatch.undo()
    assert removed[0].endswith(f"/{MARKER_NAME}") and removed[1].endswith("/r (tree)")
    assert read_marker(url) is None
    fs.invalidate_cache()
    assert not fs.exists(root)
    c.abort()


def test_torn_or_foreign_marker_reads_as_incomplete(tmp_path):
    for body in (b'{"config_hash": "c"', b"[1, 2]", b"\xff\xfe"):
        (tmp_path / "s").mkdir(exist_ok=True)
        (tmp_path / "s" / MARKER_NAME).write_bytes(body)
        assert read_marker(str(tmp_path / "s")) is None
        assert not is_complete(str(tmp_path / "s"), config_hash="c")


def test_atomic_file_publishes_whole_or_nothing(tmp_path, s3_bucket):
    for url in (str(tmp_path / "a" / "x.tar"), f"{s3_bucket}/a/x.tar"):
        with pytest.raises(RuntimeError), AtomicFile(url) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
        with AtomicFile(url) as fh:
            fh.write(b"nothing worth it")
            fh.discard()
        fs, path = get_fs(url)
        fs.invalidate_cache()
        assert not fs.exists(path)
        with AtomicFile(url, sha256=True) as fh:
            fh.write(b"one ")
            fh.write(b"two")
        assert fs.cat_file(path) == b"one two"
        assert fh.bytes == 7 and fh.hexdigest() == hashlib.sha256(b"one two").hexdigest()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.tar"]  # no staging left


def test_clean_and_remove_staging(tmp_path):
    old = tmp_path / "ds" / ".r1.zarr.tmp-deadbeef"
    old.mkdir(parents=True)
    (old / "f").write_bytes(b"x")
    os.utime(old / "f", (0, 0))
    os.utime(old, (0, 0))
    fresh = tmp_path / "ds" / ".r2.zarr.tmp-0123abcd"
    fresh.mkdir()
    (fresh / "f").write_bytes(b"y")
    other = tmp_path / "ds" / ".hidden"
    other.write_bytes(b"kept")
    os.utime(other, (0, 0))
    removed = clean_staging(str(tmp_path), older_than_s=3600)
    assert removed == [str(old)] and fresh.exists() and other.exists()
    assert remove_staging(str(tmp_path / "ds" / "r2.zarr")) == [str(fresh)]
    assert not fresh.exists() and other.exists()


def test_library_import_is_light():
    code = (
        "import sys, brainomni, brainomni.io.fs, brainomni.io.retry, brainomni.io.commit, brainomni.sources\n"
        "heavy = [m for m in ('mne', 'mne_bids', 's3fs', 'pyarrow', 'fsspec', 'botocore', 'ray')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
