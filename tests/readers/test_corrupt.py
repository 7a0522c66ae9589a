"""Damaged inputs end as RecordingFailed with a reason that names the file and the problem."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from brainomni.errors import RecordingFailed
from brainomni.readers import open_raw
from tests.conftest import meeg_file


def _fails(path: Path | str, match: str, error_class: str | None = None) -> RecordingFailed:
    with pytest.raises(RecordingFailed, match=match) as info, open_raw(str(path)):
        pass
    assert info.value.outcome == "failed"
    assert Path(str(path)).name in info.value.reason
    if error_class is not None:
        assert info.value.error_class.startswith(error_class)
    return info.value


def test_zero_byte_edf(tmp_path: Path) -> None:
    (tmp_path / "empty.edf").write_bytes(b"")
    _fails(tmp_path / "empty.edf", r"empty \(0 bytes\)", "EmptyFile")


def test_missing_file(tmp_path: Path) -> None:
    _fails(tmp_path / "nope.edf", "does not exist", "MissingFile")


def test_edf_truncated_inside_the_header(tmp_path: Path) -> None:
    src = meeg_file("EDF/test_edf_overlapping_annotations.edf").read_bytes()
    (tmp_path / "cut.edf").write_bytes(src[:1000])
    _fails(tmp_path / "cut.edf", "truncated: 1000 bytes, shorter than its own", "TruncatedFile")


def test_edf_promising_more_records_than_it_holds(tmp_path: Path) -> None:
    src = meeg_file("EDF/test_edf_overlapping_annotations.edf").read_bytes()
    (tmp_path / "short.edf").write_bytes(src[: len(src) // 2])
    err = _fails(tmp_path / "short.edf", "header promises 124 data records", "TruncatedFile")
    assert "holds 61 complete records" in err.reason


def test_edf_header_lying_about_records(tmp_path: Path) -> None:
    src = bytearray(meeg_file("BDF/test_bdf_stim_channel.bdf").read_bytes())
    src[236:244] = b"99      "  # the file holds 10 one-second records
    (tmp_path / "lying.bdf").write_bytes(bytes(src))
    _fails(tmp_path / "lying.bdf", "promises 99 data records", "TruncatedFile")


def test_random_bytes_fif(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "noise_raw.fif").write_bytes(rng.bytes(4096))
    err = _fails(tmp_path / "noise_raw.fif", "cannot read as MEGIN", "ReadError")
    assert "corrupt, truncated or not this format" in err.reason


def test_random_bytes_edf(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "noise.edf").write_bytes(rng.bytes(4096))
    _fails(tmp_path / "noise.edf", "not a number|truncated|declares", None)


def test_brainvision_without_its_eeg(tmp_path: Path) -> None:
    for ext in (".vhdr", ".vmrk"):
        shutil.copy(meeg_file(f"Brainvision/test_NO{ext}"), tmp_path / f"test_NO{ext}")
    err = _fails(
        tmp_path / "test_NO.vhdr",
        r"data file \(DataFile=\) test_NO.eeg is missing",
        "MissingCompanion",
    )
    assert "copy it beside the file" in err.reason


def test_eeglab_without_its_fdt(tmp_path: Path) -> None:
    shutil.copy(meeg_file("EEGLAB/test_raw.set"), tmp_path / "test_raw.set")
    _fails(tmp_path / "test_raw.set", "fdt", None)


def test_ctf_folder_without_meg4(tmp_path: Path) -> None:
    src = meeg_file("CTF/testdata_ctf_short_discontinuous.ds")
    dst = tmp_path / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.meg4"))
    err = _fails(dst, r"has no \*\.meg4 file", "MissingCompanion")
    assert "copy the whole folder" in err.reason


def test_truncated_fif_data(tmp_path: Path) -> None:
    src = meeg_file("misc/neuromag122_test_file-raw.fif").read_bytes()
    (tmp_path / "cut_raw.fif").write_bytes(src[: len(src) // 2])
    _fails(tmp_path / "cut_raw.fif", "cut_raw.fif", None)


def test_missing_mffpy_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    path = meeg_file("EGI/test_egi_multiepoch_eprime.mff")
    for mod in [m for m in sys.modules if m == "mffpy" or m.startswith("mffpy.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "mffpy", None)  # import mffpy -> ImportError
    err = _fails(path, "needs an optional package", "MissingDependency")
    assert "pip install mffpy" in err.reason
