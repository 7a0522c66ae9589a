"""Staging failures say whether they are worth a retry (the ingest job retries those)."""

from __future__ import annotations

import fsspec
import pytest

from brainomni.clean import preprocess_recording
from brainomni.readers import open as open_mod
from tests.conftest import meeg_file


@pytest.mark.parametrize(
    ("exc", "transient"),
    [(ConnectionResetError("reset by peer"), True), (PermissionError("denied"), False)],
)
def test_staging_error_transient_flag(monkeypatch, exc, transient):
    fs = fsspec.filesystem("memory")
    fs.pipe("/stage/k.con", meeg_file("KIT/MQKIT_125_2sec.con").read_bytes())

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(open_mod, "_get", boom)
    res = preprocess_recording("memory://stage/k.con", out=None)
    assert res.outcome == "failed" and res.error_class.startswith("StageError.")
    assert res.transient is transient
    assert "memory://stage/k.con" in res.reason
