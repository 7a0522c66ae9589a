"""Corpus rehearsal: every pretraining and unseen-device dataset of the catalog, as a small
BIDS dataset with its device geometry and channel names (tests/ingest/rehearsal.py), ingested
in one Ray job with the catalog's channel fixes; kept channels per type checked."""

from __future__ import annotations

import dataclasses
import json

import pytest

from brainomni.ingest import IngestJob, read_ledger, run_job
from brainomni.manifests.catalog import DEFAULT_CATALOG, load_datasets
from brainomni.pipeline.ray import RayExecutor
from brainomni.sources import Source, load_catalog
from tests.ingest import rehearsal

pytestmark = pytest.mark.slow

RANGES = {"eeg": (19, 128), "meg": (157, 306)}  # spec §1; BTi (unseen) has 248


@pytest.fixture(scope="session")
def rehearsal_corpus(tmp_path_factory, meeg_dir):
    datasets = [d for d in load_datasets().datasets if d.role in ("pretrain", "unseen")]
    roots = rehearsal.build(tmp_path_factory.mktemp("rehearsal"), datasets)
    return datasets, roots


def _sources(datasets, roots) -> tuple[Source, ...]:
    """The catalog's sources (fixes attached by load_catalog) pointed at the local copies;
    datasets without a [[source]] (outside OpenNeuro) get one built like load_catalog would."""
    listed = {s.name: s for s in load_catalog(str(DEFAULT_CATALOG))}
    out = []
    for d in datasets:
        src = listed.get(d.accession)
        if src is None:
            src = Source(
                url="-",
                name=d.accession,
                version=d.version or "0.0.0",
                modality=d.modality if d.modality in ("eeg", "meg") else "",
                fixes=d.fixes.to_json(),
            )
        out.append(dataclasses.replace(src, url=str(roots[d.accession]), storage_options={}))
    return tuple(out)


def test_corpus_rehearsal(ray_local, rehearsal_corpus, tmp_path):
    datasets, roots = rehearsal_corpus
    specs = rehearsal.specs()
    assert len(datasets) == 31  # the paper's 22 (HBN-EEG R1-R8 as 8 accessions) + 2 unseen
    dest = str(tmp_path / "out")
    summary = run_job(IngestJob(sources=_sources(datasets, roots), dest=dest), RayExecutor())
    rows = {r.dataset: r for r in read_ledger(dest)}
    assert set(rows) == {d.accession for d in datasets}, summary
    failed = {k: (r.outcome, r.reason) for k, r in rows.items() if r.outcome != "ok"}
    assert not failed
    for d in datasets:
        r, spec = rows[d.accession], specs[d.accession]
        got = {"EEG": r.n_eeg, "MAG": r.n_mag, "GRAD": r.n_grad}
        assert got == {k: spec.expect.get(k, 0) for k in got}, (d.accession, got)
        n_meg, n_eeg = r.n_mag + r.n_grad, r.n_eeg
        if d.accession == "ds005261":
            assert n_meg == d.channels == 248  # BTi/4D magnetometers
        else:  # the dataset's own modality (the CTF file's 8 EEG electrodes are not a cap)
            mods = ("eeg", "meg") if d.modality == "emeg" else (d.modality,)
            for mod, n in (("eeg", n_eeg), ("meg", n_meg)):
                lo, hi = RANGES[mod]
                assert lo <= n <= hi if mod in mods else n in (0, 8), (d.accession, mod, n)
        # the fixes the ledger records are the catalog's
        fixes = json.loads(r.fixes) if r.fixes else {}
        assert fixes.get("hash", "") == d.fixes.hash, d.accession
    # every fix kind was exercised
    led = {k: json.loads(r.fixes) for k, r in rows.items() if r.fixes}
    assert led["ds002721"]["renamed"] == {"FP1": "Fp1", "FP2": "Fp2"}
    assert led["ds003555"]["excluded"] == ["T1", "T2"]
    assert led["ds004148"]["excluded"] == ["CPz"] and led["ds004148"]["montage_placed"] == 60
    assert led["ds005505"]["reference_dropped"] is True and led["ds005505"]["excluded"] == ["Cz"]
    assert led["ds005697"]["montage_placed"] == 62
    assert sorted(led["ds005620"]["excluded"]) == ["EMG", "HEOG", "VEOG"]
    assert led["omega"]["excluded"] == [f"EEG{i:03d}" for i in range(57, 65)]  # "EEG*"
    # kept channels against the catalog's channel count, less what the fixes and the
    # sensor table must drop (documented per dataset); CTF: the real file lacks 2 of 275.
    less = {
        "ds003555": 2,  # T1, T2 (exclude)
        "ds004148": 4,  # CPz (exclude) + HEOG, VEOG, EKG (by name)
        "ds004186": 1,  # Cz (reference)
        "ds005620": 3,  # EMG, HEOG, VEOG (exclude)
        "ds005697": 2,  # CB1, CB2 (exclude; Trigger is beside the 64)
        "ds004078": 12,  # 318 = 306 MEG + 12 others (uncertain, see the catalog)
    }
    by = {d.accession: d for d in datasets}
    for acc, d in by.items():
        r = rows[acc]
        kept = r.n_eeg + r.n_mag + r.n_grad
        if specs[acc].geometry == "ctf":
            if "channels" not in d.uncertain:  # OMEGA: 306 in the paper, uncertain
                assert r.n_grad == d.channels - 2 == 273, acc
        else:
            assert kept == d.channels - less.get(acc, 0), (acc, kept, d.channels)
