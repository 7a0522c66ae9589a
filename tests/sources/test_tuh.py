"""TUH-style trees in both layouts, built from a real EDF with TUH channel names."""

from __future__ import annotations

import pytest

from brainomni.sources import crawl
from brainomni.sources.tuh import crawl_tuh, parse_tuh_path


def _check(result, corpus):
    refs = {r.relpath: r for r in result.recordings}
    assert sorted(refs) == sorted(corpus.recordings)
    for rel, exp in corpus.recordings.items():
        ref = refs[rel]
        for f in ("subject", "session", "run", "modality", "format", "line_freq"):
            assert getattr(ref, f) == exp[f], (rel, f)
        assert dict(ref.extra) == exp["extra"]
        assert (ref.dataset, ref.dataset_version) == (corpus.name, corpus.version)
        assert ref.size > 0 and ref.checksum
    assert {r.relpath: w for r, w in result.skipped}.keys() == corpus.skipped.keys()


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_tuh_local(layout, request):
    corpus = request.getfixturevalue(f"tuh_{layout}_corpus")
    _check(crawl(corpus.source()), corpus)


def test_tuh_files_carry_tuh_channel_names(tuh_v1_corpus):
    import mne

    rel = next(r for r in tuh_v1_corpus.recordings if "01_tcp_ar" in r)
    raw = mne.io.read_raw_edf(tuh_v1_corpus.root / rel, verbose="error")
    assert "EEG FP1-REF" in raw.ch_names and "EEG T3-REF" in raw.ch_names
    rel_le = next(r for r in tuh_v1_corpus.recordings if "02_tcp_le" in r)
    assert (
        "EEG FP1-LE" in mne.io.read_raw_edf(tuh_v1_corpus.root / rel_le, verbose="error").ch_names
    )


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_tuh_from_s3(layout, request, s3_corpora):
    corpus = request.getfixturevalue(f"tuh_{layout}_corpus")
    remote = crawl(corpus.source(url=s3_corpora[corpus.name]))
    _check(remote, corpus)
    local = crawl(corpus.source())
    assert [r.recording_id for r in remote.recordings] == [r.recording_id for r in local.recordings]
    assert all(r.checksum.startswith("etag:") for r in remote.recordings)


@pytest.mark.parametrize(
    ("rel", "fields", "extra"),
    [
        (
            "01_tcp_ar/002/00000254/s005_2010_11_15/00000254_s005_t000.edf",
            {"subject": "00000254", "session": "005", "run": "000"},
            {
                "montage": "01_tcp_ar",
                "reference": "ar",
                "layout": "v1",
                "session_date": "2010-11-15",
            },
        ),
        (
            "edf/000/aaaaaaaa/s001_2015_12_30/03_tcp_ar_a/aaaaaaaa_s001_t002.edf",
            {"subject": "aaaaaaaa", "session": "001", "run": "002"},
            {
                "montage": "03_tcp_ar_a",
                "reference": "ar_a",
                "layout": "v2",
                "session_date": "2015-12-30",
            },
        ),
        (
            "edf/train/abnormal/01_tcp_ar/aaaaaaaq_s004_t000.edf",
            {"subject": "aaaaaaaq", "session": "004", "run": "000"},
            {"montage": "01_tcp_ar", "reference": "ar", "layout": "flat"},
        ),
        (
            "02_tcp_le/000/00000258/s002_2003/00000258_s002.EDF",
            {"subject": "00000258", "session": "002", "run": ""},
            {"montage": "02_tcp_le", "reference": "le", "layout": "v1", "session_date": "2003"},
        ),
    ],
)
def test_parse_tuh_path(rel, fields, extra):
    got_fields, got_extra = parse_tuh_path(rel)
    assert got_fields == fields and dict(got_extra) == extra


@pytest.mark.parametrize(
    "rel",
    [
        "01_tcp_ar/000/x/s001_2010/notes.edf",  # not SUBJECT_sSSS
        "000/aaaaaaaa/s002_2016_01_05/01_tcp_ar/aaaaaaaa_s001_t000.edf",  # session mismatch
        "000/bbbbbbbb/s001_2016_01_05/01_tcp_ar/aaaaaaaa_s001_t000.edf",
    ],  # subject mismatch
)
def test_parse_tuh_path_rejects(rel):
    assert parse_tuh_path(rel) is None


def test_tuh_needs_identity(tuh_v1_corpus):
    with pytest.raises(ValueError, match="name and version"):
        crawl_tuh(str(tuh_v1_corpus.root), name="", version="")
