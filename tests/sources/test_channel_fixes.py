"""Per-dataset channel fixes: catalog validation, and rename/exclude/reference/montage applied
to real recordings (positions checked against MNE's own ``set_montage`` and the TSV file)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from brainomni.clean import preprocess_recording
from brainomni.manifests.catalog import DEFAULT_CATALOG, load_datasets
from brainomni.records import EEG, RecordingRef
from brainomni.sensors.fixes import ChannelFixes
from brainomni.sources import load_catalog
from tests.conftest import meeg_file

MANIFESTS = DEFAULT_CATALOG.parent


def _catalog(tmp_path: Path, body: str, montage: str | None = None) -> Path:
    if montage is not None:
        (tmp_path / "montages").mkdir(exist_ok=True)
        (tmp_path / "montages" / "cap.tsv").write_text(montage)
    p = tmp_path / "catalog.toml"
    p.write_text(body)
    return p


DATASET = '[[dataset]]\naccession = "ds000001"\nname = "x"\nrole = "pretrain"\nmodality = "eeg"\n'


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('montaj = "biosemi64"\n', r"ds000001.*unknown key\(s\) \['montaj'\]"),
        ('montage = "biosemi63"\n', r"ds000001.*montage 'biosemi63' is neither"),
        ('rename = ["FP1"]\n', r"ds000001.*rename must be a table"),
        ('rename = { A = "X", B = "X" }\n', r"ds000001.*same name"),
        ('exclude = "T1"\n', r"ds000001.*exclude must be a list"),
        ('montage = "montages/missing.tsv"\n', r"ds000001.*missing.tsv not found"),
        ('montage = "../cap.tsv"\n', r"ds000001.*must be relative"),
        ('montage = "montages/cap.tsv"\n', r"ds000001.*radius 85 is not a head in metres"),
    ],
)
def test_bad_catalog_entries_name_the_entry(tmp_path, extra, match):
    path = _catalog(tmp_path, DATASET + extra, montage="name\tx\ty\tz\nFp1\t85\t0\t0\n")
    with pytest.raises(ValueError, match=match):
        load_datasets(path)


def test_fixes_go_in_dataset_tables_not_sources(tmp_path):
    src = '[[source]]\nurl = "/data/ds000001"\nname = "ds000001"\nexclude = ["T1"]\n'
    with pytest.raises(ValueError, match=r"entry 1: channel fixes \['exclude'\] belong in"):
        load_catalog(str(_catalog(tmp_path, src)))


def test_catalog_attaches_fixes_to_sources(tmp_path):
    montage = "name\tx\ty\tz\nA\t0.08\t0\t0\nB\t0\t0.08\t0\nC\t0\t0\t0.08\n"
    body = (
        '[[source]]\nurl = "/data/ds000001-1.0.0"\n\n[[source]]\nurl = "/data/ds000002"\n\n'
        + DATASET
        + 'montage = "montages/cap.tsv"\nrename = { a = "A" }\nreference = "Cz"\n'
    )
    sources = load_catalog(str(_catalog(tmp_path, body, montage)))
    fixes = ChannelFixes.from_json(sources[0].fixes)
    assert fixes.rename == (("a", "A"),) and fixes.reference == "Cz"
    assert fixes.positions == (("A", 0.08, 0.0, 0.0), ("B", 0.0, 0.08, 0.0), ("C", 0.0, 0.0, 0.08))
    assert sources[1].fixes == ""  # no [[dataset]] table of that name
    assert ChannelFixes.from_json(fixes.to_json()) == ChannelFixes(**{**fixes.__dict__, "note": ""})
    yml = tmp_path / "catalog.yaml"
    yml.write_text(
        "sources:\n  - url: /data/ds000001\ndatasets:\n  - accession: ds000001\n"
        "    name: x\n    role: pretrain\n    modality: eeg\n    exclude: [T1]\n"
    )
    assert ChannelFixes.from_json(load_catalog(str(yml))[0].fixes).exclude == ("T1",)


def test_shipped_catalog_fixes():
    cat = load_datasets()
    # the official code's per-dataset fixes (spec §1-2)
    assert cat.get("ds002721").fixes.rename == (("FP1", "Fp1"), ("FP2", "Fp2"))
    assert set(cat.get("ds003555").fixes.exclude) == {"T1", "T2"}
    assert cat.get("ds003775").fixes.montage == "biosemi64"
    for hbn in ("ds004186", *(f"ds0055{i:02d}" for i in range(5, 13))):
        assert cat.get(hbn).fixes.reference == "Cz", hbn
    for acc, n, drop in (("ds004148", 61, "Cpz"), ("ds005697", 62, "CB1")):
        fixes = cat.get(acc).fixes
        assert len(fixes.positions) == n and drop in fixes.exclude
        radius = np.linalg.norm([p[1:] for p in fixes.positions], axis=1)
        assert 0.07 < radius.mean() < 0.11  # metres
    # ds005697 is rotated to MNE's head frame: Fp1 in front (+y), left (-x)
    fp1 = next(p for p in cat.get("ds005697").fixes.positions if p[0] == "FP1")
    assert fp1[2] > 0.07 and fp1[1] < 0
    # every pretraining/unseen dataset says what it needs, or why nothing
    assert all(d.fixes.note for d in cat.datasets if d.role != "downstream")
    sources = {s.name: s for s in load_catalog(str(DEFAULT_CATALOG))}
    assert sources["ds005697"].fixes == cat.get("ds005697").fixes.to_json()
    assert sources["ds003682"].fixes == ""


# --------------------------------------------------------------------------- real files


def _biosemi32_fixes() -> ChannelFixes:
    import mne

    names = mne.channels.make_standard_montage("biosemi32").ch_names
    rename = tuple((f"EEG {i:03d}", names[i]) for i in range(32))
    return ChannelFixes(rename=rename, exclude=("Fp1", "oz"), reference="Cz", montage="biosemi32")


def test_rename_montage_exclude_reference_on_eeglab_file():
    import mne

    path = meeg_file("EEGLAB/test_raw.set")
    fixes = _biosemi32_fixes()
    plain = preprocess_recording(RecordingRef(uri=str(path)))
    assert plain.outcome == "skipped"  # "EEG 000"... cannot be placed without the fixes
    res = preprocess_recording(RecordingRef(uri=str(path), fixes=fixes.to_json()))
    assert res.outcome == "ok", res.reason
    table = res.table
    expected = [n for _, n in fixes.rename if n not in ("Fp1", "Oz", "Cz")]
    assert table.names == expected and table.count(EEG) == 29
    dropped = {d.name: d.reason for d in table.dropped}
    assert set(dropped) == {"Fp1", "Oz", "Cz"}
    assert set(table.pos_source) == {"montage:biosemi32"}
    # positions: MNE's own set_montage on an info with the same names
    info = mne.create_info(expected, 128.0, "eeg")
    info.set_montage("biosemi32")
    want = np.array([ch["loc"][:3] for ch in info["chs"]])
    np.testing.assert_allclose(table.pos, want, atol=1e-6)
    assert res.fixes["renamed"]["EEG 000"] == "Fp1"
    assert res.fixes["excluded"] == ["Fp1", "Oz", "Cz"]  # exclude matches any case
    assert res.fixes["reference_dropped"] is True and res.fixes["montage_placed"] == 29
    assert res.fixes["hash"] == fixes.hash


def test_custom_montage_file_on_brainvision_file(tmp_path):
    import zarr

    path = meeg_file("Brainvision/test_NO.vhdr")
    cat = load_datasets()
    fixes = cat.get("ds005697").fixes
    montage = {n: np.array(xyz) for n, *xyz in fixes.positions}
    names = [p[0] for p in fixes.positions]
    rename = {str(i): names[i - 1] for i in range(1, 33)}  # file channels "1".."32"
    rename.update({str(i): names[i - 9] for i in range(41, 71)})  # "41".."70"
    fx = ChannelFixes(
        rename=tuple(sorted(rename.items())),
        exclude=("EMGright", "EMGleft", "71"),
        montage=fixes.montage,
        positions=fixes.positions,
    )
    out = str(tmp_path / "rec.zarr")
    res = preprocess_recording(RecordingRef(uri=str(path), fixes=fx.to_json()), out=out)
    assert res.outcome == "ok", res.reason
    assert len(res.table) == 62 and res.table.names == list(rename.values())
    np.testing.assert_allclose(
        res.table.pos, np.array([montage[n] for n in res.table.names]), atol=1e-6
    )
    assert set(res.table.pos_source) == {"montage:montages/ds005697.tsv"}
    prov = dict(zarr.open_group(out, mode="r").attrs)["provenance"]
    assert prov["fixes"]["montage"] == "montages/ds005697.tsv"
    assert prov["fixes"]["excluded"] == ["EMGright", "EMGleft", "71"]


def test_reference_and_rename_on_neuromag_file_and_bids_names():
    path = meeg_file("SSS/sample_audvis_trunc_raw_sss.fif")
    fx = ChannelFixes(rename=(("EEG 001", "Fp1x"),), reference="EEG 010")
    ref = RecordingRef(
        uri=str(path),
        fixes=fx.to_json(),
        bad_channels=("EEG 001",),  # channels.tsv names follow the rename
        channel_types=(("EEG 001", "EEG"),),
    )
    res = preprocess_recording(ref)
    assert res.outcome == "ok", res.reason
    s = res.table.summary()
    assert s["EEG"] == 59 and s["MAG"] == 102 and s["GRAD"] == 204  # EEG 010 dropped
    assert "Fp1x" in res.table.names and "EEG 010" not in res.table.names
    assert "Fp1x" in res.qc["interpolated"]
    assert res.fixes == {
        "hash": fx.hash,
        "renamed": {"EEG 001": "Fp1x"},
        "excluded": ["EEG 010"],
        "reference": "EEG 010",
        "reference_dropped": True,
    }


def test_contradicting_fixes_are_a_recorded_failure():
    path = meeg_file("EEGLAB/test_raw.set")
    clash = ChannelFixes(rename=(("EEG 000", "EEG 001"),))
    res = preprocess_recording(RecordingRef(uri=str(path), fixes=clash.to_json()))
    assert res.outcome == "failed" and res.error_class == "BadChannelFixes"
    assert "test_raw.set" in res.reason and "rename table" in res.reason
    broken = preprocess_recording(RecordingRef(uri=str(path), fixes='{"rename": 3}'))
    assert broken.outcome == "failed" and broken.error_class == "BadChannelFixes"
    for bad in ('{"montage": "nonesuch"}', '{"positions": [["A", 1, 2, NaN]]}', "x" * 300_000):
        res = preprocess_recording(RecordingRef(uri=str(path), fixes=bad))
        assert (res.outcome, res.error_class) == ("failed", "BadChannelFixes"), bad[:40]
    assert json.loads(ChannelFixes().to_json() or "{}") == {}


def test_crawl_attaches_fixes_and_a_changed_fix_changes_the_checksum(bids_eeg_corpus, tmp_path):
    from brainomni.sources import crawl, read_recordings, write_recordings

    plain = crawl(bids_eeg_corpus.source()).recordings
    fx = ChannelFixes(exclude=("C4",), reference="Cz")
    fixed = crawl(dataclasses.replace(bids_eeg_corpus.source(), fixes=fx.to_json())).recordings
    other = ChannelFixes(exclude=("C3",))
    fixed2 = crawl(dataclasses.replace(bids_eeg_corpus.source(), fixes=other.to_json())).recordings
    assert [r.recording_id for r in fixed] == [r.recording_id for r in plain]  # ids stable
    for a, b, c in zip(plain, fixed, fixed2, strict=True):
        assert b.fixes == fx.to_json() and a.fixes == ""
        assert b.checksum == f"{a.checksum}+fixes-{fx.hash}" != c.checksum
    write_recordings(fixed, str(tmp_path / "r.parquet"))
    assert read_recordings(str(tmp_path / "r.parquet")) == fixed  # the frozen list keeps them
