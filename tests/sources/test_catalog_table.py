"""Catalog formats and the Parquet recordings table."""

from __future__ import annotations

import pytest

from brainomni.records import RecordingRef
from brainomni.sources import (
    Source,
    crawl,
    crawl_many,
    detect_source,
    load_catalog,
    read_recordings,
    read_table,
    recordings_table,
    refs_from_table,
    skipped_table,
    write_crawl,
    write_recordings,
)

TOML = """
[[source]]
name = "ds002721"
url = "s3://openneuro.org/ds002721"
version = "1.0.3"
kind = "bids"
modality = "eeg"
storage_options = { anon = true }

[[source]]
name = "tuh_eeg"
url = "/data/tuh_eeg/edf"
version = "2.0.1"
kind = "tuh"
line_freq = 60
"""

YAML = """
sources:
  - {name: ds002721, url: "s3://openneuro.org/ds002721", version: 1.0.3, modality: eeg,
     storage_options: {anon: true}}
  - {name: tuh_eeg, url: /data/tuh_eeg/edf, version: 2.0.1, kind: tuh, line_freq: 60}
"""

TEXT = """
# url version options
s3://openneuro.org/ds002721 1.0.3 name=ds002721 modality=eeg anon=true
/data/tuh_eeg/edf 2.0.1 kind=tuh name=tuh_eeg line_freq=60
"""


@pytest.mark.parametrize(("suffix", "text"), [(".toml", TOML), (".yaml", YAML), (".txt", TEXT)])
def test_catalog_formats_agree(tmp_path, suffix, text):
    path = tmp_path / f"corpus{suffix}"
    path.write_text(text)
    a, b = load_catalog(str(path))
    assert a == Source(
        url="s3://openneuro.org/ds002721",
        kind="bids",
        name="ds002721",
        version="1.0.3",
        modality="eeg",
        storage_options={"anon": True},
    )
    assert a.storage_options == {"anon": True}
    assert (b.kind, b.name, b.version, b.line_freq) == ("tuh", "tuh_eeg", "2.0.1", 60.0)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('url = "/x"\nkind = "edf"', "Source.kind"),
        ('url = "/x"\nkind = "tuh"', "needs name and version"),
        ('url = "/x"\nmodality = "ieeg"', "Source.modality"),
        ('url = "/x"\nbucket = "b"', "unknown catalog key"),
        ('url = "/x"\nline_freq = -50', "line_freq"),
        ('url = "s3://b/x"\nstorage_options = { secret = "hunter2-secret" }', "credentials"),
    ],
)
def test_catalog_validation(tmp_path, entry, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[[source]]\n{entry}\n")
    with pytest.raises(ValueError, match=message) as info:
        load_catalog(str(path))
    assert "entry 1" in str(info.value) and "hunter2" not in str(info.value)


def test_catalog_refuses_duplicates(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("/a 1.0 name=x\n/b 1.0 name=x\n")
    with pytest.raises(ValueError, match="listed twice"):
        load_catalog(str(path))


def test_catalog_on_s3_drives_crawls(s3_server, s3_corpora, bids_eeg_corpus, tuh_v2_corpus):
    bucket = s3_server.make_bucket()
    s3_server.put_bytes(
        f"{bucket}/corpus.toml",
        f"""
[[source]]
url = "{s3_corpora[bids_eeg_corpus.name]}"
[[source]]
url = "{s3_corpora[tuh_v2_corpus.name]}"
kind = "tuh"
name = "{tuh_v2_corpus.name}"
version = "{tuh_v2_corpus.version}"
line_freq = 60
""".encode(),
    )
    sources = load_catalog(f"{bucket}/corpus.toml")
    total = crawl_many(sources)
    assert len(total.recordings) == len(bids_eeg_corpus.recordings) + len(tuh_v2_corpus.recordings)
    with pytest.raises(ValueError, match="duplicate recording ids"):
        crawl_many([sources[0], sources[0]])


def test_detect_source(bids_eeg_corpus, tuh_v1_corpus):
    assert detect_source(str(bids_eeg_corpus.root)).kind == "bids"
    src = detect_source(str(tuh_v1_corpus.root), name="t", version="1")
    assert src.kind == "tuh"
    with pytest.raises(ValueError):
        detect_source(str(tuh_v1_corpus.root))  # TUH needs name and version


def _sample_refs():
    return [
        RecordingRef(
            uri="/d/a.edf",
            format="edf",
            dataset="d",
            dataset_version="1",
            relpath="a.edf",
            subject="01",
            line_freq=50.0,
            bad_channels=("Fp1", "O2"),
            channel_types=(("Fp1", "EEG"), ("O2", "EEG")),
            size=10,
            checksum="sha256:x",
            extra=(("participants.age", "30"), ("montage", "01_tcp_ar")),
        ),
        RecordingRef(uri="s3://b/x.ds"),
    ]


def test_table_round_trip_local(tmp_path):
    refs = _sample_refs()
    table = recordings_table(refs)
    assert table.column("recording_id").to_pylist() == [r.recording_id for r in refs]
    assert refs_from_table(table) == refs
    write_recordings(refs, str(tmp_path / "recordings.parquet"))
    assert read_recordings(str(tmp_path / "recordings.parquet")) == refs


def test_table_shared_pairs_across_batches(monkeypatch):
    """Pair columns are built from each distinct tuple once and gathered by index: shared,
    equal-but-distinct and empty tuples, over several batches, give every row its own."""
    import dataclasses

    from brainomni.sources import table as tbl

    monkeypatch.setattr(tbl, "_BATCH", 3)
    shared = (("Fz", "EEG"), ("Cz", "EEG"))
    refs = [
        RecordingRef(
            uri=f"/d/{i}.edf",
            channel_types=[shared, (("Fz", "EEG"), ("Cz", "EEG")), (), (("M1", "MEGMAG"),)][i % 4],
            bad_channels=("Cz",) * (i % 2),
            extra=(("participants.age", str(i)),),
        )
        for i in range(10)
    ]
    table = recordings_table(refs, [f"why {i}" for i in range(10)])
    assert table.column("channel_types").to_pylist() == [
        [{"name": n, "type": t} for n, t in r.channel_types] for r in refs
    ]
    assert table.column("reason").to_pylist() == [f"why {i}" for i in range(10)]
    assert refs_from_table(table) == refs
    assert [dataclasses.asdict(r) for r in refs_from_table(recordings_table(refs))] == [
        dataclasses.asdict(r) for r in refs
    ]


def test_table_rejects_foreign_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a recordings table"):
        read_table(str(tmp_path / "other.parquet"))


def test_crawl_tables_round_trip_s3(s3_bucket, s3_corpora, bids_meg_corpus):
    result = crawl(bids_meg_corpus.source(url=s3_corpora[bids_meg_corpus.name]))
    rec_url, skip_url = write_crawl(result, f"{s3_bucket}/crawl")
    assert read_recordings(rec_url) == result.recordings
    skipped = read_table(skip_url)
    assert skipped.column("reason").to_pylist() == [why for _, why in result.skipped]
    assert refs_from_table(skipped) == [r for r, _ in result.skipped]
    assert skipped_table(result.skipped).num_rows == len(result.skipped)
