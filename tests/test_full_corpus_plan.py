"""scripts/full_corpus_plan.py: the figures of docs/full-corpus.md, recomputed by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fcp", ROOT / "scripts/full_corpus_plan.py")
fcp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fcp)


def test_estimated_hours_match_the_papers_totals():
    ds = fcp.load_datasets(ROOT / "manifests" / "catalog.toml")
    hours = fcp.estimate_hours(ds, None)
    pre = [d for d in ds if d["role"] == "pretrain"]
    eeg = sum(hours[d["accession"]] for d in pre if d["modality"] == "eeg")
    meg = sum(hours[d["accession"]] for d in pre if d["modality"] != "eeg")
    assert math.isclose(eeg, 1997.0) and math.isclose(meg, 656.0)


def test_one_dataset_by_hand(tmp_path):
    d = [{"accession": "x", "role": "pretrain", "modality": "eeg", "channels": 64, "sfreq": 1000}]
    p = fcp.plan(d, {"x": 10.0})
    r, (a, b, c) = p["rows"][0], fcp.fit_cost()
    assert math.isclose(r["cpu_s_per_h"], a + b * 64 + c * 64)
    assert math.isclose(r["core_hours"], 10 * (a + b * 64 + c * 64) / 3600 / fcp.RAY_EFFICIENCY)
    assert math.isclose(r["store_gb"], 10 * 3600 * 256 * 64 * 4 / 1e9)
    assert math.isclose(r["source_gb"], 10 * 3600 * 1000 * 64 * 2 / 1e9)
    assert r["recordings"] == math.ceil(10 / fcp.AVG_RECORDING_H["eeg"])
    cl = fcp.cluster(p["totals"], wall_h=1.0)
    assert cl["nodes"] == max(1, math.ceil(r["source_gb"] * 1e3 / fcp.NODE_READ_MB_S / 3600))
    g = fcp.gpu_plan(p["totals"], {"BrainTokenizer (16 epochs)": 100.0})
    assert math.isclose(g[0]["our_gpu_hours"], 16 * 10 * 360 / 100.0 / 3600)


def test_fit_reproduces_the_measurements():
    for ch, hz, s in fcp.MEASURED.values():
        assert abs(fcp.cpu_cost(ch, hz) - s) < 0.6  # the fit's residuals on the measurements


def test_cli_prints_the_tables(capsys):
    assert fcp.main([]) == 0
    out = capsys.readouterr().out
    assert "| recording-hours | 2" in out and "A100" in out
