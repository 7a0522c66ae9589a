"""Hostile BIDS sidecars (issue #15, defects 2 and 4): decoding fallback, closed list of
coordinate units, invalid JSON, electrodes rows; the crawl never stops on one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainomni.sources.bids import crawl_bids
from brainomni.sources.sidecars import (
    CRAWL_ERROR_KEY,
    SidecarError,
    crawl_problem,
    decode,
    load_electrodes,
    parse_json,
)


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _bids(root: Path, subjects: tuple[str, ...] = ("01", "02")) -> Path:
    """A tiny BIDS tree; the data files are never read by a crawl (only hashed)."""
    _write(root / "dataset_description.json", json.dumps({"Name": "x", "BIDSVersion": "1.9"}))
    for sub in subjects:
        d = root / f"sub-{sub}" / "eeg"
        _write(d / f"sub-{sub}_task-rest_eeg.edf", b"0" * 256)
        _write(d / f"sub-{sub}_task-rest_eeg.json", json.dumps({"PowerLineFrequency": 50}))
        _write(
            d / f"sub-{sub}_task-rest_channels.tsv",
            "name\ttype\tstatus\tstatus_description\nFz\tEEG\tgood\tn/a\n"
            "Cz\tEEG\tbad\tn/a\nEOG\tEOG\tgood\tn/a\n",
        )
    return root


# --------------------------------------------------------------------------- decoding


def test_decode_fallback_is_stated() -> None:
    text = "name\tdescription\nFz\tcaf\u00e9\n"
    assert decode(text.encode("utf-8"), "f") == (text, "utf-8")
    assert decode(b"\xef\xbb\xbf" + text.encode("utf-8"), "f") == (text, "utf-8-bom")
    raw = text.encode("latin-1") + b"\xff"  # not UTF-8: every byte kept as Latin-1
    assert decode(raw, "f") == (raw.decode("latin-1"), "latin-1")
    assert decode(text.encode("utf-16"), "f") == (text, "utf-16")  # BOM written by Python
    with pytest.raises(SidecarError, match="/data/x_channels.tsv.*NUL") as e:
        decode(b"name\x00\x01", "/data/x_channels.tsv")
    assert e.value.error_class == "SidecarDecodeError"


@pytest.mark.parametrize("text", ["{", "[1, 2]", "", "[" * 100_000, '{"a": 1} trailing'], ids=repr)
def test_parse_json_names_the_file(text: str) -> None:
    with pytest.raises(SidecarError, match="/d/sub-01_eeg.json") as e:
        parse_json(text, "/d/sub-01_eeg.json")
    assert e.value.error_class == "BadSidecarJSON"


# --------------------------------------------------------------------------- crawl (defect 2)


def test_non_utf8_channels_and_participants_do_not_stop_the_crawl(tmp_path: Path) -> None:
    """Defect 2: a \\xff in channels.tsv or participants.tsv raised UnicodeDecodeError."""
    root = _bids(tmp_path / "ds")
    chan = root / "sub-01/eeg/sub-01_task-rest_channels.tsv"
    chan.write_bytes(chan.read_bytes().replace(b"bad\tn/a", b"bad\tsaturated \xff\xfe"))
    _write(root / "participants.tsv", b"participant_id\tsite\nsub-01\tK\xf6ln\nsub-02\tUlm\n")
    result = crawl_bids(str(root), checksums=False)
    assert not result.skipped
    refs = {r.subject: r for r in result.recordings}
    assert refs["01"].bad_channels == ("Cz",)  # the row with the stray bytes still parsed
    extra1, extra2 = dict(refs["01"].extra), dict(refs["02"].extra)
    assert extra1["sidecar_encoding.sub-01_task-rest_channels.tsv"] == "latin-1"
    assert "sidecar_encoding.sub-02_task-rest_channels.tsv" not in extra2  # plain UTF-8
    assert extra1["participants.site"] == "K\u00f6ln"  # Latin-1 decoding, as stated
    assert extra1["sidecar_encoding.participants.tsv"] == "latin-1"


def test_unusable_sidecars_become_that_recordings_failure(tmp_path: Path) -> None:
    root = _bids(tmp_path / "ds", ("01", "02", "03"))
    _write(root / "sub-01/eeg/sub-01_task-rest_eeg.json", '{"PowerLineFrequency": 50,')
    _write(root / "sub-02/eeg/sub-02_task-rest_channels.tsv", b"name\x00\x00\xff")
    _write(root / "participants.tsv", b"\x00binary")
    _write(root / "dataset_description.json", "not json")
    result = crawl_bids(str(root), name="ds", version="1", checksums=False)
    refs = {r.subject: r for r in result.recordings}
    assert set(refs) == {"01", "02", "03"}  # all listed: each gets its ledger row later
    p1, p2 = crawl_problem(refs["01"].extra), crawl_problem(refs["02"].extra)
    assert p1.error_class == "BadSidecarJSON" and "sub-01_task-rest_eeg.json" in p1.reason
    assert p2.error_class == "SidecarDecodeError" and "sub-02_task-rest_channels.tsv" in p2.reason
    assert crawl_problem(refs["03"].extra) is None and refs["03"].bad_channels == ("Cz",)
    skipped = {ref.relpath: why for ref, why in result.skipped}
    assert set(skipped) == {"participants.tsv", "dataset_description.json"}
    assert "not valid JSON" in skipped["dataset_description.json"]
    assert CRAWL_ERROR_KEY not in dict(refs["03"].extra)


def test_oversized_sidecar_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    from brainomni.sources import sidecars
    from brainomni.sources.listing import Listing

    monkeypatch.setattr(sidecars, "MAX_SIDECAR_BYTES", 1000)
    root = _bids(tmp_path / "ds", ("01", "02"))
    big = root / "sub-01/eeg/sub-01_task-rest_channels.tsv"
    big.write_bytes(b"name\ttype\n" + b"C3\tEEG\n" * 200)
    reads: list[str] = []
    real_cat = Listing.read_text.__globals__["retry"]

    def spy(fn, *a, **k):
        reads.append(k.get("what", ""))
        return real_cat(fn, *a, **k)

    monkeypatch.setitem(Listing.read_text.__globals__, "retry", spy)
    refs = {r.subject: r for r in crawl_bids(str(root), checksums=False).recordings}
    problem = crawl_problem(refs["01"].extra)
    assert problem.error_class == "SidecarTooLarge"
    assert f"{big.stat().st_size} bytes" in problem.reason
    assert not any("sub-01_task-rest_channels.tsv" in w for w in reads)  # never read
    assert crawl_problem(refs["02"].extra) is None


def test_unreadable_data_file_is_that_recordings_failure(tmp_path: Path, monkeypatch) -> None:
    from brainomni.sources.listing import Listing

    root = _bids(tmp_path / "ds", ("01", "02"))
    real = Listing.file_checksum

    def deny(self, rel):
        if rel.startswith("sub-01/"):
            raise PermissionError(13, "Permission denied", rel)
        return real(self, rel)

    monkeypatch.setattr(Listing, "file_checksum", deny)
    refs = {r.subject: r for r in crawl_bids(str(root)).recordings}
    problem = crawl_problem(refs["01"].extra)
    assert problem.error_class == "Unreadable.PermissionError"
    assert "sub-01_task-rest_eeg.edf" in problem.reason and refs["01"].checksum is None
    assert crawl_problem(refs["02"].extra) is None and refs["02"].checksum.startswith("sha256:")


# --------------------------------------------------------------------------- electrodes (defect 4)

ROWS = [("Fz", 0.0, 60.0, 60.0), ("Cz", 0.0, 0.0, 90.0), ("Pz", 0.0, -60.0, 60.0)]


def _electrodes(
    folder: Path, units: object = "mm", rows=ROWS, coordsystem: bytes | None = None
) -> str:
    tsv = "name\tx\ty\tz\timpedance\n" + "".join(
        "\t".join(str(c) for c in r) + "\tn/a\n" for r in rows
    )
    path = _write(folder / "sub-01_space-CapTrak_electrodes.tsv", tsv)
    doc = {"EEGCoordinateSystem": "CapTrak"}
    if units is not None:
        doc["EEGCoordinateUnits"] = units
    cs = coordsystem if coordsystem is not None else json.dumps(doc).encode()
    _write(folder / "sub-01_space-CapTrak_coordsystem.json", cs)
    return str(path)


@pytest.mark.parametrize(("units", "scale"), [("mm", 1e-3), ("cm", 1e-2), ("m", 1.0), ("MM", 1e-3)])
def test_units_from_the_closed_list(tmp_path: Path, units: str, scale: float) -> None:
    got = load_electrodes(_electrodes(tmp_path, units), None)
    assert got.units == units.lower() and got.encoding == "utf-8"
    for name, *xyz in ROWS:
        assert got.positions[name] == pytest.approx([v * scale for v in xyz], rel=1e-12)


@pytest.mark.parametrize("units", ["furlongs", "inches", 1, "metres"])
def test_unknown_units_fail_naming_field_and_file(tmp_path: Path, units: object) -> None:
    """Defect 4: unknown units were taken as metres."""
    with pytest.raises(SidecarError, match="EEGCoordinateUnits") as e:
        load_electrodes(_electrodes(tmp_path, units), None)
    assert e.value.error_class == "BadCoordinateUnits"
    assert "sub-01_space-CapTrak_coordsystem.json" in e.value.reason


@pytest.mark.parametrize("body", [b"", b"{units: mm}", b"\xff\xfe{", b"[]"], ids=repr)
def test_coordsystem_not_json_fails(tmp_path: Path, body: bytes) -> None:
    """Defect 4: a coordsystem.json that is not JSON was taken as metres."""
    with pytest.raises(SidecarError, match="coordsystem.json") as e:
        load_electrodes(_electrodes(tmp_path, coordsystem=body), None)
    assert e.value.error_class == "BadSidecarJSON"


@pytest.mark.parametrize("units", ["n/a", None])
def test_unknown_units_leave_the_file_unused(tmp_path: Path, units: str | None) -> None:
    got = load_electrodes(_electrodes(tmp_path, units), None)
    assert got.positions == {} and got.units == "n/a" and "units unknown" in got.note


@pytest.mark.parametrize(
    ("row", "what"),
    [
        (("Oz", "abc", 1, 2), "BadElectrodes"),
        (("Oz", "inf", 1, 2), "BadElectrodes"),
        (("Oz", "1e400", 1, 2), "BadElectrodes"),  # overflows float64
        (("Oz", "n/a", 1, 2), "BadElectrodes"),  # partly n/a
        (("Oz", "", 1, 2), "BadElectrodes"),
    ],
)
def test_bad_rows_fail_naming_line_and_channel(tmp_path: Path, row: tuple, what: str) -> None:
    with pytest.raises(SidecarError, match=r"line 5 \(channel 'Oz'\)") as e:
        load_electrodes(_electrodes(tmp_path, rows=[*ROWS, row]), None)
    assert e.value.error_class == what


def test_rows_without_position_and_latin1(tmp_path: Path) -> None:
    path = _electrodes(tmp_path, rows=[*ROWS, ("Oz", "n/a", "n/a", "n/a")])
    Path(path).write_bytes(Path(path).read_bytes().replace(b"impedance", b"imp\xe9dance"))
    got = load_electrodes(path, None)
    assert got.no_position == ["Oz"] and set(got.positions) == {"Fz", "Cz", "Pz"}
    assert got.encoding == "latin-1"
    qc = got.qc()
    assert qc["electrodes_without_position"] == ["Oz"] and qc["units"] == "mm"
    assert qc["coordsystem"].endswith("sub-01_space-CapTrak_coordsystem.json")


def test_header_without_coordinates_fails(tmp_path: Path) -> None:
    path = _electrodes(tmp_path)
    Path(path).write_text("label\tpos\nFz\t1\n")
    with pytest.raises(SidecarError, match="lacks name, x, y and z") as e:
        load_electrodes(path, None)
    assert e.value.error_class == "BadElectrodes"
