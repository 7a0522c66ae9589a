"""Fixtures of the ingest tests: one local Ray session (2 CPUs) shared by the module tests.

Ray is started after the moto S3 server so that its workers inherit the endpoint and the
fake credentials from the environment, as a cluster's nodes would.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local(s3_server) -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield None
    finally:
        ray.shutdown()


def store_hashes(root: str | Path) -> dict[str, str]:
    """sha256 of every file under ``root/recordings`` by relative path."""
    root = Path(root) / "recordings"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
