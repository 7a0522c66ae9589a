"""BIDS crawl of corpora written with mne-bids from the real recordings, locally and from S3."""

from __future__ import annotations

import dataclasses
import json

import pytest

from brainomni.sources import Source, crawl
from brainomni.sources.bids import crawl_bids

IDENTITY_FIELDS = ("subject", "session", "task", "run", "acquisition", "modality", "format")


def _by_rel(result):
    return {r.relpath: r for r in result.recordings}


def _check_expected(result, corpus):
    found = _by_rel(result)
    assert sorted(found) == sorted(corpus.recordings)
    for rel, exp in corpus.recordings.items():
        ref = found[rel]
        for f in IDENTITY_FIELDS:
            if f in exp:
                assert getattr(ref, f) == exp[f], (rel, f)
        assert ref.line_freq == exp.get("line_freq"), rel
        if "bad_channels" in exp:
            assert ref.bad_channels == exp["bad_channels"], rel
        if "bad_channels_include" in exp:
            assert exp["bad_channels_include"] in ref.bad_channels
        assert ref.dataset == corpus.name and ref.dataset_version == corpus.version
        assert ref.size and ref.size > 0 and ref.checksum
    assert {r.relpath: why for r, why in result.skipped}.keys() == corpus.skipped.keys()
    for ref, why in result.skipped:
        assert corpus.skipped[ref.relpath] in why


def test_bids_eeg_local(bids_eeg_corpus):
    c = bids_eeg_corpus
    result = crawl(c.source())
    _check_expected(result, c)
    refs = _by_rel(result)
    bdf = refs["sub-01/ses-01/eeg/sub-01_ses-01_task-rest_run-1_eeg.bdf"]
    assert bdf.electrodes_uri.endswith("sub-01_ses-01_space-CapTrak_electrodes.tsv")
    assert (c.root / "sub-01/ses-01/eeg/sub-01_ses-01_space-CapTrak_coordsystem.json").exists()
    assert dict(bdf.channel_types) == {"C3": "EEG", "C4": "EEG", "Cz": "EEG", "Status": "TRIG"}
    assert ("participants.group", "control") in bdf.extra and (
        "participants.age",
        "31",
    ) in bdf.extra
    assert bdf.checksum.startswith("sha256:") and bdf.uri == str(c.root / bdf.relpath)
    vhdr = refs["sub-03/eeg/sub-03_task-oddball_acq-highres_eeg.vhdr"]
    stem = c.root / "sub-03/eeg/sub-03_task-oddball_acq-highres_eeg"
    assert vhdr.size == sum(stem.with_suffix(s).stat().st_size for s in (".vhdr", ".eeg", ".vmrk"))
    assert vhdr.checksum.startswith("tree-sha256:")
    assert vhdr.line_freq == 50.0  # inherited from the root-level task-oddball_eeg.json
    assert ("participants.sex", "n/a") not in vhdr.extra
    edf = refs["sub-02/eeg/sub-02_task-rest_eeg.edf"]
    assert edf.electrodes_uri is None and len(edf.channel_types) == 139


def test_bids_meg_local_skips_and_folders(bids_meg_corpus):
    c = bids_meg_corpus
    result = crawl(c.source())
    _check_expected(result, c)
    refs = _by_rel(result)
    ds = refs["sub-02/ses-01/meg/sub-02_ses-01_task-rest_run-1_meg.ds"]
    folder = c.root / ds.relpath
    assert ds.format == "ctf" and ds.uri == str(folder)
    assert ds.size == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    split = refs["sub-04/meg/sub-04_task-long_split-01_meg.fif"]
    parts = sorted((c.root / "sub-04/meg").glob("*_split-*_meg.fif"))
    assert len(parts) == 2 and split.size == sum(p.stat().st_size for p in parts)
    reasons = result.skip_counts()
    assert any("empty-room" in r for r in reasons) and any("split" in r for r in reasons)
    assert result.summary()["by_format"] == {"fif": 2, "ctf": 1, "kit": 1}


def test_crawl_is_stable_and_frozen(bids_eeg_corpus, bids_meg_corpus):
    for c in (bids_eeg_corpus, bids_meg_corpus):
        a, b = crawl(c.source()), crawl(c.source())
        assert a == b
        ids = [r.recording_id for r in a.recordings]
        assert len(set(ids)) == len(ids)


def test_identity_overrides_and_filters(bids_eeg_corpus, bids_meg_corpus, caplog):
    pinned = crawl_bids(str(bids_eeg_corpus.root), name="my_eeg", version="9.9.9", checksums=False)
    assert {(r.dataset, r.dataset_version) for r in pinned.recordings} == {("my_eeg", "9.9.9")}
    assert all(r.checksum is None for r in pinned.recordings)
    assert "9.9.9 given" in caplog.text  # disagrees with DatasetVersion 1.0.0
    only_eeg = crawl(Source(url=str(bids_meg_corpus.root), modality="eeg"))
    assert only_eeg.recordings == [] and only_eeg.skipped == []
    with pytest.raises(ValueError, match="modalities"):
        crawl_bids(str(bids_eeg_corpus.root), modalities=("ieeg",))


def test_unusual_entries(bids_eeg_corpus, tmp_path):
    import shutil

    root = tmp_path / "ds990003-2.0.0"
    shutil.copytree(bids_eeg_corpus.root, root)
    eeg = root / "sub-02/eeg"
    (eeg / "sub-02_task-rest_eeg.xyz").write_bytes(b"?")
    (eeg / "sub-02_task-emptyroom_eeg.edf").write_bytes(b"x")
    (eeg / "sub-02_task-rest_physio.edf").write_bytes(b"x")
    (eeg / "sub-02_task-scan_eeg.cnt").write_bytes(b"x")
    (eeg / "sub-02_task-odd_eeg.xyz").mkdir()
    (eeg / "sub-02_task-odd_eeg.xyz/data").write_bytes(b"x")
    bti = root / "sub-02/meg/sub-02_task-rest_meg"
    bti.mkdir(parents=True)
    for name in ("c,rfDC", "config", "hs_file"):
        (bti / name).write_bytes(b"1234")
    (root / "sub-02/meg/sub-02_task-empty_meg").mkdir()
    (root / "sub-02/meg/sub-02_task-empty_meg/config").write_bytes(b"1")
    (root / "derivatives/sub-02/eeg").mkdir(parents=True)
    (root / "derivatives/sub-02/eeg/sub-02_task-rest_eeg.edf").write_bytes(b"x")
    result = crawl(str(root))
    assert {r.dataset_version for r in result.recordings} == {"2.0.0"}  # snapshot suffix wins
    assert {r.dataset for r in result.recordings} == {"ds990003"}
    why = {r.relpath.rsplit("/", 1)[1]: w for r, w in result.skipped}
    assert why == {
        "sub-02_task-rest_eeg.xyz": "unsupported file format .xyz",
        "sub-02_task-odd_eeg.xyz": "unsupported folder format .xyz",
        "sub-02_task-emptyroom_eeg.edf": "empty-room/noise recording (name)",
        "sub-02_task-rest_physio.edf": "BIDS suffix is not _eeg",
        "sub-02_task-empty_meg": "BTi/4D folder without a c,rf* data file",
    }
    refs = {r.relpath: r for r in result.recordings}
    cnt = refs["sub-02/eeg/sub-02_task-scan_eeg.cnt"]
    assert cnt.format is None  # Neuroscan or ANT: the reader sniffs
    meg = refs["sub-02/meg/sub-02_task-rest_meg"]
    assert (meg.format, meg.modality, meg.size) == ("bti", "meg", 12)
    assert meg.uri == str(bti / "c,rfDC")
    assert len(result.recordings) == 5  # derivatives/ not crawled


def test_format_keys_match_reader_registry():
    formats = pytest.importorskip("brainomni.readers.formats")
    from brainomni.sources.base import BTI_FORMAT, FILE_FORMATS, FOLDER_FORMATS

    keys = {k for k in (*FILE_FORMATS.values(), *FOLDER_FORMATS.values(), BTI_FORMAT) if k}
    assert keys <= set(formats.FORMATS), keys - set(formats.FORMATS)


def test_corrupt_inputs_are_still_listed(corrupt_bids_corpus):
    """The crawl lists broken files as recordings: reading them is the ingest's job."""
    c = corrupt_bids_corpus
    result = crawl(c.source())
    refs = _by_rel(result)
    assert sorted(refs) == sorted(c.recordings)
    assert refs["sub-03/eeg/sub-03_task-rest_eeg.edf"].size == 0
    for rel, exp in c.recordings.items():
        assert refs[rel].format == exp["format"]


def test_bids_from_s3_matches_local(s3_corpora, bids_eeg_corpus, bids_meg_corpus, s3_server):
    for c in (bids_eeg_corpus, bids_meg_corpus):
        local = crawl(c.source())
        remote = crawl(c.source(url=s3_corpora[c.name], storage_options=s3_server.storage_options))
        _check_expected(remote, c)
        assert [r.recording_id for r in remote.recordings] == [
            r.recording_id for r in local.recordings
        ]
        for lr, rr in zip(local.recordings, remote.recordings, strict=True):
            assert rr.uri == f"{s3_corpora[c.name]}/{rr.relpath}"
            assert rr.checksum.startswith(("etag:", "tree-sha256:"))
            same = ("size", "line_freq", "bad_channels", "channel_types", "extra", *IDENTITY_FIELDS)
            assert {f: getattr(rr, f) for f in same} == {f: getattr(lr, f) for f in same}
            assert (lr.electrodes_uri is None) == (rr.electrodes_uri is None)
        assert crawl(c.source(url=s3_corpora[c.name])) == remote  # endpoint from AWS_ENDPOINT_URL


def test_bids_s3_snapshot_version(s3_server, bids_eeg_corpus):
    url = s3_server.upload_dir(bids_eeg_corpus.root, s3_server.make_bucket() + "/ds990001-1.2.3")
    desc = json.loads((bids_eeg_corpus.root / "dataset_description.json").read_text())
    assert desc["DatasetVersion"] == "1.0.0"
    result = crawl(url)
    assert {(r.dataset, r.dataset_version) for r in result.recordings} == {("ds990001", "1.2.3")}
    local_ids = {
        dataclasses.replace(r, dataset_version="1.2.3").recording_id
        for r in crawl(bids_eeg_corpus.source()).recordings
    }
    assert {r.recording_id for r in result.recordings} == local_ids
