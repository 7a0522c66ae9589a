"""A real S3 endpoint for tests: moto's server on 127.0.0.1, spoken to by s3fs over HTTP.

Load as a pytest plugin (``pytest_plugins = ["tests.fixtures_s3"]`` in the root conftest).

Fixtures:

* ``s3_server`` (session): an :class:`S3Server`. While the session runs, the environment
  carries fake credentials, ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (so code that
  reads the standard configuration, Ray workers included, reaches the server with no
  options), and no shared AWS config file is read.
* ``s3_bucket`` (function): the URL ``s3://NAME`` of a fresh empty bucket.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-access-key",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_counter = itertools.count()


@dataclass
class S3Server:
    """A running moto S3 endpoint."""

    endpoint_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)  # for s3fs / get_fs

    def fs(self) -> Any:
        """A fresh (uncached) s3fs filesystem talking to the endpoint."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def make_bucket(self, prefix: str = "test") -> str:
        """Create an empty bucket; its URL ``s3://NAME``."""
        name = f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}".lower()[:63]
        self.fs().mkdir(name)
        return f"s3://{name}"

    def upload_dir(self, local: str | os.PathLike[str], url: str) -> str:
        """Copy a local folder's content under ``url`` (``s3://bucket/prefix``); ``url``."""
        fs, local = self.fs(), Path(local)
        dest = url.removeprefix("s3://").rstrip("/")
        for path in sorted(local.rglob("*")):
            if path.is_file():
                fs.put_file(str(path), f"{dest}/{path.relative_to(local).as_posix()}")
        return url.rstrip("/")

    def put_bytes(self, url: str, data: bytes) -> None:
        self.fs().pipe_file(url.removeprefix("s3://"), data)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's threaded server on a free port for the whole session."""
    pytest.importorskip("moto", reason="moto[server] is needed for the S3 tests")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in FAKE_ENV.items():
        mp.setenv(key, value)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_CONFIG_FILE", os.devnull)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield S3Server(endpoint, {"client_kwargs": {"endpoint_url": endpoint}})
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh empty bucket per test; s3fs caches are cleared before and after."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_server.make_bucket()
    s3fs.S3FileSystem.clear_instance_cache()
