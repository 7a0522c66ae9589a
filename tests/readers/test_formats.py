"""The format registry: detection, reader names, companions, the CNT width rule."""

from __future__ import annotations

import subprocess
import sys

import fsspec
import pytest

from brainomni.readers.cnt import cnt_data_format
from brainomni.readers.companions import brainvision_companions, fif_split_companions, safe_join
from brainomni.readers.formats import FORMATS, detect_format, get_format
from tests.conftest import meeg_file


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("sub-01_task-rest_meg.fif", "fif"),
        ("raw.fif.gz", "fif"),
        ("s3://bucket/x/rec.ds/", "ctf"),
        ("rec.ds", "ctf"),
        ("memory://a/b.con", "kit"),
        ("b.SQD", "kit"),
        ("/data/4D/c,rfDC", "bti"),
        ("e,rfhp1.0Hz,COH", "bti"),
        ("x.EDF", "edf"),
        ("x.bdf", "bdf"),
        ("x.gdf", "gdf"),
        ("x.vhdr", "brainvision"),
        ("x.set", "eeglab"),
        ("x.mff", "egi_mff"),
        ("x.mff/", "egi_mff"),
        ("x.eeg", "nihon_kohden"),
        ("x.nxe", "eximia"),
        ("x.nedf", "nedf"),
        ("x.bin", "artemis123"),
        ("x.lay", "persyst"),
        ("x.snirf", "snirf"),
        ("sub-01_task-rest_meg.bin", "fil"),
        ("x.asc", "eyelink"),
        ("x.cdt", "curry"),
        ("x.mefd", "mef"),
        ("x.ns5", "nsx"),
        ("x.data", "nicolet"),
        ("x.mat", "fieldtrip"),
        ("x.xyz", "generic"),
    ],
)
def test_detect_format_by_name(name: str, key: str) -> None:
    assert detect_format(name) == key


def test_cnt_detection_tells_ant_from_neuroscan(tmp_path) -> None:
    neuroscan = meeg_file("CNT/scan41_short.cnt")
    assert detect_format(str(neuroscan)) == "cnt"
    ant = tmp_path / "x.cnt"
    ant.write_bytes(b"RIFF" + bytes(100))
    assert detect_format(str(ant)) == "ant"


def test_every_registered_reader_exists_in_mne() -> None:
    import mne

    for spec in FORMATS.values():
        assert callable(getattr(mne.io, spec.reader)), spec.key
    assert FORMATS["fif"].kwargs["allow_maxshield"] is True
    with pytest.raises(ValueError, match="unknown format"):
        get_format("nope")


def test_cnt_width_rule_picks_int16_on_scan41() -> None:
    # header sample count is 0, so MNE's auto raises; int32 would read ~1 V medians
    assert cnt_data_format(str(meeg_file("CNT/scan41_short.cnt"))) == "int16"


def test_brainvision_companions_come_from_the_header(tmp_path) -> None:
    vhdr = tmp_path / "a.vhdr"
    vhdr.write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\n"
        "DataFile=data/other.eeg\nMarkerFile=a.vmrk\n"
    )
    comps = brainvision_companions(fsspec.filesystem("file"), str(vhdr))
    assert [c.path for c in comps] == [str(tmp_path / "data/other.eeg"), str(tmp_path / "a.vmrk")]
    assert all(c.required for c in comps)
    vhdr.write_text("[Common Infos]\nDataFile=../../etc/passwd\n")
    with pytest.raises(ValueError, match="escapes"):
        brainvision_companions(fsspec.filesystem("file"), str(vhdr))


def test_fif_split_companions(tmp_path) -> None:
    for n in (
        "run_raw.fif",
        "run_raw-1.fif",
        "run_raw-2.fif",
        "run_raw2.fif",
        "sub-1_split-01_meg.fif",
        "sub-1_split-02_meg.fif",
    ):
        (tmp_path / n).write_bytes(b"x")
    fs = fsspec.filesystem("file")
    names = lambda comps: sorted(c.path.rsplit("/", 1)[1] for c in comps)  # noqa: E731
    assert names(fif_split_companions(fs, str(tmp_path / "run_raw.fif"))) == [
        "run_raw-1.fif",
        "run_raw-2.fif",
    ]
    assert names(fif_split_companions(fs, str(tmp_path / "sub-1_split-01_meg.fif"))) == [
        "sub-1_split-02_meg.fif"
    ]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "C:\\x", ""])
def test_safe_join_refuses_escapes(bad: str) -> None:
    with pytest.raises(ValueError):
        safe_join("/data/rec", bad)
    assert safe_join("/data/rec", "sub/./x.eeg") == "/data/rec/sub/x.eeg"


def test_import_brainomni_readers_and_sensors_is_light() -> None:
    code = (
        "import sys, brainomni, brainomni.readers, brainomni.sensors;"
        "heavy=[m for m in ('mne','fsspec','s3fs','scipy') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
