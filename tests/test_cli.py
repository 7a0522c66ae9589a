"""The command line: inspect / preprocess on real files, --help on every entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brainomni.cli import main
from tests.conftest import ROOT, meeg_file


def test_inspect_json_has_the_documented_fields(capsys):
    path = meeg_file("KIT/MQKIT_125_2sec.con")
    assert main(["inspect", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("outcome", "reason", "sfreq", "duration_s", "channels", "dropped", "qc"):
        assert key in d
    assert d["outcome"] == "ok" and d["sfreq"] == 1000.0 and d["duration_s"] == 2.0
    assert len(d["channels"]) == 125
    ch = d["channels"][0]
    assert set(ch) >= {"name", "type", "pos", "ori", "pos_source"} and ch["type"] == "GRAD"
    assert {x["reason"] for x in d["dropped"]} >= {"reference MEG channel"} or d["dropped"]


def test_inspect_json_stays_clean_when_a_reader_prints(capsys):
    """mffpy prints to stdout while reading EGI; --json output must still parse."""
    path = meeg_file("EGI/test_egi_multiepoch_eprime.mff")
    assert main(["inspect", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["outcome"] == "ok"
    assert d["qc"]["bad_segments"] == [[1.342, 1.802]]  # the acquisition skip


def test_inspect_human_summary_and_skip_exit_code(capsys):
    assert main(["inspect", str(meeg_file("EEGLAB/test_raw.set"))]) == 0  # skip is not failure
    out = capsys.readouterr().out
    assert "skipped" in out and "electrodes.tsv" in out


def test_preprocess_writes_store(tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert (
        main(
            [
                "preprocess",
                str(meeg_file("CNT/scan41_short.cnt")),
                "--out",
                str(out),
                "--line-freq",
                "60",
                "--bads",
                "10",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "store" in text and (out / "_COMPLETE").exists()
    import zarr

    qc = zarr.open_group(str(out), mode="r").attrs["qc"]
    assert qc["notch_freqs"] == [60.0]
    assert any(b["name"] == "10" and "given as bad" in b["reasons"] for b in qc["bad_channels"])


def test_failed_recording_exit_code(tmp_path, capsys):
    bad = tmp_path / "broken.edf"
    bad.write_bytes(b"0" * 100)
    assert main(["inspect", str(bad)]) == 2
    assert "failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "cmd",
    [
        [sys.executable, "-m", "brainomni", "--help"],
        [sys.executable, "-m", "brainomni", "inspect", "--help"],
        [sys.executable, "-m", "brainomni", "preprocess", "--help"],
        [sys.executable, "pipelines/ingest.py", "--help"],
        [sys.executable, "pipelines/pack.py", "--help"],
        [sys.executable, "pipelines/publish.py", "--help"],
        [sys.executable, "pipelines/tokenize_shards.py", "--help"],
        [sys.executable, "tests/benchmarks/bench_preprocess.py", "--help"],
        [sys.executable, "-m", "demo", "--help"],
        [sys.executable, "-m", "brainomni.demo", "--help"],
    ],
)
def test_help_on_every_entry_point(cmd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "usage" in p.stdout.lower()


def test_pack_rejects_windows_over_acquisition_skips(tmp_path):
    from brainomni.pack import get_profile
    from brainomni.pack.run import pack
    from brainomni.preprocess import preprocess_recording
    from brainomni.records import RecordingRef

    ref = RecordingRef(
        uri=str(meeg_file("EGI/test_egi_multiepoch_eprime.mff")), dataset="dsTEST", subject="01"
    )
    res = preprocess_recording(ref, out=str(tmp_path / "s" / "egi.zarr"))
    assert res.outcome == "ok"
    index = pack(
        str(tmp_path / "s"),
        str(tmp_path / "p"),
        get_profile("tokenizer-10s", window_s=4.0, stride_s=4.0),
    )
    # 16 s -> 4 windows of 4 s; the skip at 1.34-1.80 s spoils the first one only
    assert index["rejected_windows"].get("bad_segment") == 1


def test_inspect_plot_writes_a_qc_figure(tmp_path, capsys):
    png = tmp_path / "qc.png"
    path = meeg_file("SSS/sample_audvis_trunc_raw_sss.fif")
    assert main(["inspect", str(path), "--plot", str(png), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    psd = d["qc"]["psd"]
    assert len(psd["freqs"]) == len(psd["GRAD"]) == 129  # 1-Hz Welch bins, 0-128 Hz
    assert set(psd["bad"]) == {b["name"] for b in d["qc"]["bad_channels"]}
    assert len(d["qc"]["channel_rms"]) == len(d["channels"])


def test_no_pipeline_shadows_a_stdlib_module():
    """Scripts run as ``python pipelines/X.py`` put pipelines/ first on sys.path: a file named
    like a standard module (tokenize.py did) would break every entry point."""
    names = {p.stem for p in (ROOT / "pipelines").glob("*.py")} - {"__init__"}
    assert not names & set(sys.stdlib_module_names)


def test_tokenize_pipeline_passes_the_same_options_as_the_cli(monkeypatch):
    """``pipelines/tokenize_shards.py`` and ``brainomni tokenize`` give tokenize_corpus the
    same options (overlap, shards root, sha256 checks)."""
    import importlib.util

    import brainomni.tokenize as tk

    seen = {}

    def fake(tokenizer, manifest, dest, **kw):
        seen.update(kw)
        return {"splits": {}, "content_hash": "x"}

    monkeypatch.setattr(tk, "tokenize_corpus", fake)
    spec = importlib.util.spec_from_file_location("tok_pipe", ROOT / "pipelines/tokenize_shards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--tokenizer", "t", "--manifest", "m", "--dest", "d", "--executor", "local"]
    extra = ["--overlap", "0.5", "--shards-root", "s3://b/x", "--no-verify"]
    assert mod.main(args + extra) == 0
    assert seen["overlap_ratio"] == 0.5 and seen["shards_root"] == "s3://b/x"
    assert seen["verify_sha256"] is False and seen["map_fn"] is map
