"""The ingest job on a local Ray session: s3:// -> s3://, TUH trees, corrupt inputs."""

from __future__ import annotations

import json

import pytest

from brainomni.ingest import IngestJob, read_ledger, run_job
from brainomni.pipeline.ray import RayExecutor

pytestmark = pytest.mark.slow


def test_bids_s3_to_s3(
    ray_local, s3_server, s3_corpora, s3_bucket, bids_eeg_corpus, bids_meg_corpus
):
    import zarr

    so = s3_server.storage_options
    sources = tuple(c.source(s3_corpora[c.name], so) for c in (bids_eeg_corpus, bids_meg_corpus))
    dest = f"{s3_bucket}/corpus"
    summary = run_job(
        IngestJob(sources=sources, dest=dest, dest_storage_options=so), RayExecutor(max_in_flight=2)
    )
    expected = {**bids_eeg_corpus.recordings, **bids_meg_corpus.recordings}
    rows = {r.relpath: r for r in read_ledger(dest, so)}
    assert set(rows) == set(expected)  # one row per recording, nothing else
    assert summary["recordings"] == len(expected)
    assert summary["crawl_skipped_by_reason"]  # empty-room and split part, with reasons
    assert all(r.outcome in ("ok", "skipped") for r in rows.values()), [
        (r.relpath, r.reason) for r in rows.values() if r.outcome == "failed"
    ]
    ok = [r for r in rows.values() if r.outcome == "ok"]
    assert {r.modality for r in ok} == {"eeg", "meg"}
    fs = s3_server.fs()
    for r in ok:
        assert r.store.startswith(f"{dest}/recordings/") and r.bytes_out > 0
        assert r.worker and r.uri.startswith("s3://")
        g = zarr.open_group(r.store, mode="r", storage_options=so)
        assert g["signal"].shape[0] == r.n_eeg + r.n_mag + r.n_grad
        assert g["signal"].shape[1] == round(r.output_hours * 3600 * g.attrs["sfreq"])
        assert fs.exists(f"{r.store.removeprefix('s3://')}/_COMPLETE")
    eeg = g_attrs(rows["sub-01/ses-01/eeg/sub-01_ses-01_task-rest_run-1_eeg.bdf"].store, so)
    assert "C4" in eeg["qc"]["interpolated"]
    bad = next(b for b in eeg["qc"]["bad_channels"] if b["name"] == "C4")
    assert "marked bad in channels.tsv" in bad["reasons"]
    assert eeg["qc"]["line_freq"] == 50.0 and eeg["qc"]["line_freq_source"] == "bids"
    meg = g_attrs(rows["sub-01/meg/sub-01_task-audvis_meg.fif"].store, so)
    assert "MEG 2443" in meg["qc"]["interpolated"]
    assert meg["qc"]["line_freq"] == 60.0
    ctf = rows["sub-02/ses-01/meg/sub-02_ses-01_task-rest_run-1_meg.ds"]
    assert ctf.outcome == "ok" and ctf.line_freq == 50.0  # folder format staged from s3
    summary_doc = json.loads(fs.cat_file(f"{dest.removeprefix('s3://')}/summary.json"))
    assert summary_doc["hours_by"]["modality"].keys() == {"eeg", "meg"}
    assert not fs.exists(f"{dest.removeprefix('s3://')}/ledger/part-x")  # parts folded


def g_attrs(url: str, so: dict) -> dict:
    import zarr

    return dict(zarr.open_group(url, mode="r", storage_options=so).attrs)


def test_tuh_layouts_and_corrupt_inputs(
    ray_local, tuh_v1_corpus, tuh_v2_corpus, corrupt_bids_corpus, tmp_path
):
    sources = (tuh_v1_corpus.source(), tuh_v2_corpus.source(), corrupt_bids_corpus.source())
    dest = str(tmp_path / "out")
    summary = run_job(IngestJob(sources=sources, dest=dest), RayExecutor())
    rows = {(r.dataset, r.relpath): r for r in read_ledger(dest)}
    for corpus in (tuh_v1_corpus, tuh_v2_corpus):
        for rel, exp in corpus.recordings.items():
            r = rows[(corpus.name, rel)]
            assert r.outcome == "ok", r.reason
            assert (r.subject, r.session, r.run) == (exp["subject"], exp["session"], exp["run"])
            assert r.n_eeg == 19 and r.line_freq == 60.0
    failures = corrupt_bids_corpus.failures
    corrupt = {rel: r for (ds, rel), r in rows.items() if ds == corrupt_bids_corpus.name}
    assert {rel for rel, r in corrupt.items() if r.outcome == "failed"} == set(failures)
    assert [r.outcome for rel, r in corrupt.items() if rel not in failures] == ["ok"]
    for rel in failures:
        r = corrupt[rel]
        assert r.error_class and rel.rsplit("/", 1)[-1].split(".")[0] in r.reason
        assert not r.store and r.bytes_out is None
    assert corrupt["sub-03/eeg/sub-03_task-rest_eeg.edf"].error_class == "EmptyFile"
    assert corrupt["sub-05/eeg/sub-05_task-rest_eeg.vhdr"].error_class == "MissingCompanion"
    assert corrupt["sub-07/meg/sub-07_task-rest_meg.ds"].error_class == "MissingCompanion"
    assert corrupt["sub-06/eeg/sub-06_task-rest_eeg.edf"].error_class == "TruncatedFile"
    drops = summary["drops_by_reason"]
    assert sum(v["count"] for k, v in drops.items() if k.startswith("failed")) == len(failures)
    assert summary["by_outcome"]["ok"] == 1 + len(tuh_v1_corpus.recordings) + len(
        tuh_v2_corpus.recordings
    )
