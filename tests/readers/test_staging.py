"""Remote recordings (any fsspec URL) are staged with their companions, read, and cleaned up."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from brainomni.errors import RecordingFailed
from brainomni.readers import open_raw
from tests.conftest import meeg_file


@pytest.fixture
def mem_root() -> Iterator[str]:
    """A fresh folder on fsspec's in-memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/brainomni-test-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _upload(local: Path, remote: str) -> None:
    fs = fsspec.filesystem("memory")
    if local.is_dir():
        for p in sorted(local.rglob("*")):
            if p.is_file():
                fs.pipe(f"{remote}/{p.relative_to(local).as_posix()}", p.read_bytes())
    else:
        fs.pipe(remote, local.read_bytes())


def test_brainvision_is_staged_with_its_companions(mem_root: str, tmp_path: Path) -> None:
    for ext in (".vhdr", ".vmrk", ".eeg"):
        _upload(meeg_file(f"Brainvision/test_NO{ext}"), f"{mem_root}/bv/test_NO{ext}")
    with open_raw(str(meeg_file("Brainvision/test_NO.vhdr"))) as local:
        expected = local.raw.get_data(start=100, stop=300)
    cache = tmp_path / "cache"
    with open_raw(f"memory://{mem_root}/bv/test_NO.vhdr", cache_dir=str(cache)) as opened:
        assert opened.staged and opened.fmt == "brainvision"
        staged_dir = Path(opened.local_path).parent
        assert sorted(os.listdir(staged_dir)) == ["test_NO.eeg", "test_NO.vhdr", "test_NO.vmrk"]
        assert staged_dir.parent == cache
        np.testing.assert_array_equal(opened.raw.get_data(start=100, stop=300), expected)
    assert not staged_dir.exists() and os.listdir(cache) == []


def test_ctf_folder_is_staged_whole(mem_root: str, tmp_path: Path) -> None:
    src = meeg_file("CTF/testdata_ctf_short_discontinuous.ds")
    _upload(src, f"{mem_root}/{src.name}")
    with open_raw(f"memory://{mem_root}/{src.name}/", cache_dir=str(tmp_path)) as opened:
        assert opened.fmt == "ctf" and opened.staged
        assert sorted(os.listdir(opened.local_path)) == sorted(os.listdir(src))
        assert opened.raw.n_times == 2402
        block = opened.raw.get_data(start=1000, stop=1400)
        assert block.shape[1] == 400 and np.all(np.isfinite(block))
    assert os.listdir(tmp_path) == []


def test_file_url_is_staged_too(tmp_path: Path) -> None:
    url = meeg_file("KIT/MQKIT_125_2sec.con").resolve().as_uri()
    with open_raw(url, cache_dir=str(tmp_path)) as opened:
        assert opened.staged and opened.raw.n_times == 2000
    assert os.listdir(tmp_path) == []


def test_staged_failure_names_the_url_and_cleans_up(mem_root: str, tmp_path: Path) -> None:
    for ext in (".vhdr", ".vmrk"):  # no .eeg
        _upload(meeg_file(f"Brainvision/test_NO{ext}"), f"{mem_root}/bv/test_NO{ext}")
    url = f"memory://{mem_root}/bv/test_NO.vhdr"
    with (
        pytest.raises(RecordingFailed, match="test_NO.eeg is missing") as info,
        open_raw(url, cache_dir=str(tmp_path)),
    ):
        pass
    assert f"memory://{mem_root}/bv" in info.value.reason
    assert "brainomni-stage-" not in info.value.reason
    assert os.listdir(tmp_path) == []


def test_header_pointing_outside_is_refused(mem_root: str, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{mem_root}/bv/x.vhdr", b"[Common Infos]\nDataFile=../../secret.eeg\n")
    with (
        pytest.raises(RecordingFailed, match="escapes") as info,
        open_raw(f"memory://{mem_root}/bv/x.vhdr", cache_dir=str(tmp_path)),
    ):
        pass
    assert info.value.error_class == "UnsafeCompanion"
    assert os.listdir(tmp_path) == []


def test_missing_remote_object(mem_root: str, tmp_path: Path) -> None:
    with (
        pytest.raises(RecordingFailed, match="does not exist"),
        open_raw(f"memory://{mem_root}/nothing.edf", cache_dir=str(tmp_path)),
    ):
        pass
    assert os.listdir(tmp_path) == []


def test_errors_inside_the_block_still_clean_up(mem_root: str, tmp_path: Path) -> None:
    _upload(meeg_file("GDF/test_1ch.gdf"), f"{mem_root}/test_1ch.gdf")
    with (
        pytest.raises(KeyError),
        open_raw(f"memory://{mem_root}/test_1ch.gdf", cache_dir=str(tmp_path)),
    ):
        raise KeyError("caller bug")
    assert os.listdir(tmp_path) == []
