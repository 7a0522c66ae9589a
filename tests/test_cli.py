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
    from brainomni.clean import preprocess_recording
    from brainomni.pack import get_profile
    from brainomni.pack.run import pack
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
    from brainomni.pipeline.local import LocalExecutor

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
    assert seen["verify_sha256"] is False and "map_fn" not in seen
    assert isinstance(seen["executor"], LocalExecutor)  # --executor local: the stage core's


# --------------------------------------------------------------------------- one vocabulary


def test_parse_kv_has_one_typing_rule():
    from brainomni.cli_common import UsageError, parse_kv

    got = parse_kv(
        ["n=3", "lr=1e-4", "on=True", "off=false", "x=None", "l=[1, 2]", "u=s3://b/k=v", "e="]
    )
    assert got == {
        "n": 3,
        "lr": 0.0001,
        "on": True,
        "off": False,
        "x": None,
        "l": [1, 2],
        "u": "s3://b/k=v",  # split at the first '='
        "e": "",
    }
    assert type(got["n"]) is int and type(got["lr"]) is float
    assert parse_kv(["version=1.10", "n=1.10"], raw=("version",)) == {"version": "1.10", "n": 1.1}
    assert parse_kv(["a=1", "a=2"]) == {"a": 2}  # the last wins
    for bad in ("novalue", "=1"):
        with pytest.raises(UsageError, match="--set: expected key=value"):
            parse_kv([bad], "--set")


def test_config_overrides_use_the_same_parser():
    """pretrain, fine-tuning and source keys type values like parse_kv (lists -> tuples)."""
    from brainomni.evaluation.protocols import apply_overrides as ft_overrides
    from brainomni.evaluation.protocols import get_recipe as ft_recipe
    from brainomni.train.config import apply_overrides, get_recipe

    cfg = apply_overrides(get_recipe("cpu-test-tokenizer"), ["optim.lr=3e-4", "max_steps=7"])
    assert cfg.optim.lr == 3e-4 and cfg.max_steps == 7
    ft = ft_overrides(ft_recipe("cpu-test-finetune"), ["lrs=[1e-5, 2e-5]", "epochs=2"])
    assert ft.lrs == (1e-5, 2e-5) and ft.epochs == 2
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(get_recipe("cpu-test-tokenizer"), ["optim.lr"])


def test_help_lists_every_command_and_each_has_the_shared_options():
    import argparse

    from brainomni.cli import _COMMANDS, _HELP, build_parser

    parser = build_parser()
    text = parser.format_help()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in ("ingest", "pack", "publish", "verify", "diff", "tokenize", "pretrain",
                 "export", "inspect", "preprocess"):  # fmt: skip
        assert name in _COMMANDS and _HELP[name] and name in text
    leaves = []
    for p in sub.choices.values():
        inner = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        leaves += list(inner[0].choices.values()) if inner else [p]
    for p in leaves:
        opts = {s for a in p._actions for s in a.option_strings}
        assert {"-v", "-q", "--storage-retry-s", "-h"} <= opts, p.prog


def test_renamed_options_still_work_and_say_so(capsys):
    from brainomni.cli import build_parser

    pack = build_parser("pipelines/pack.py", "pack")
    base = ["--profile", "tokenizer-10s", "--dest", "d"]
    assert pack.parse_args(["--store", "c", *base]).source == "c"
    assert "--store is deprecated; use --source" in capsys.readouterr().err
    assert pack.parse_args(["--source", "c", *base]).source == "c"
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:
        pack.parse_args(base)
    assert e.value.code == 2 and "--source" in capsys.readouterr().err
    ingest = build_parser("pipelines/ingest.py", "ingest")
    args = ingest.parse_args(["--config", "sfreq=256", "l_freq=0.5", "--set", "h_freq=40",
                              "--log-level", "WARNING"])  # fmt: skip
    assert args.sets == ["sfreq=256", "l_freq=0.5", "h_freq=40"]
    assert (args.verbose, args.quiet) == (0, 1)
    err = capsys.readouterr().err
    assert "--config is deprecated; use --set" in err and "--log-level is deprecated" in err
    publish = build_parser("pipelines/publish.py", ("publish", "verify", "diff"))
    args = publish.parse_args(["publish", "--shards", "p", "--name", "n", "--version", "1.0.0",
                               "--out", "m"])  # fmt: skip
    assert (args.source, args.dest) == ("p", "m")


def test_verbosity_levels(monkeypatch):
    import logging

    from brainomni.cli_common import log_level

    monkeypatch.delenv("RANK", raising=False)
    assert log_level(0, 0) == logging.INFO and log_level(1, 0) == logging.DEBUG
    assert log_level(0, 1) == logging.WARNING and log_level(0, 2) == logging.ERROR
    assert log_level(0, 0, logging.WARNING) == logging.WARNING
    monkeypatch.setenv("RANK", "3")  # other ranks of a launch: warnings unless -v
    assert log_level(0, 0) == logging.WARNING and log_level(1, 0) == logging.DEBUG


def test_one_logging_setup_and_one_key_value_parser():
    """grep: logging is configured in one place, KEY=VALUE text split in one place (file
    formats with their own syntax excepted: the text catalog, reader headers — the
    ``DataFile=``/``MarkerFile=`` lines of a BrainVision ``.vhdr``, in readers/companions.py)."""
    import re

    files = sorted((ROOT / "brainomni").rglob("*.py")) + sorted((ROOT / "pipelines").glob("*.py"))
    setup = [f for f in files if re.search(r"basicConfig\(|def setup_logging", f.read_text())]
    assert [f.relative_to(ROOT).as_posix() for f in setup] == ["brainomni/cli_common.py"]
    formats = {"brainomni/sources/catalog.py", "brainomni/readers/companions.py"}
    kv = re.compile(r"""(split|partition)\(["']=["']""")
    split = {f.relative_to(ROOT).as_posix() for f in files if kv.search(f.read_text())}
    assert split - formats == {"brainomni/cli_common.py"}


def test_pipelines_are_thin_wrappers():
    """Each pipelines/ script runs one brainomni command (or publish/verify/diff)."""
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        text = path.read_text()
        assert "from brainomni.cli import main as brainomni" in text, path
        assert len(text.splitlines()) < 45, f"{path}: more than a wrapper"


def test_config_overrides_are_checked_before_the_config_sees_them(tmp_path, capsys):
    """Bad --set values end as a usage error naming the key (exit 2), never a TypeError."""
    from brainomni.cli import main
    from brainomni.cli_common import UsageError, check_overrides
    from brainomni.signal.config import CleanConfig

    ok = check_overrides(CleanConfig, {"sfreq": 200, "line_freq": 50, "detect_bads": False})
    assert ok == {"sfreq": 200.0, "line_freq": 50, "detect_bads": False}
    assert type(ok["sfreq"]) is float
    for bad, says in (
        ({"sfreq": "x"}, "expected float"),
        ({"sfreq": None}, "expected float"),
        ({"line_freq": "abc"}, "expected float | None"),
        ({"detect_bads": 1}, "expected bool"),
        ({"psd_n_fft": 2.5}, "expected int"),
        ({"fallback_line_freqs": ["a"]}, "expected tuple"),
        ({"nope": 1}, "no such field"),
    ):
        with pytest.raises(UsageError, match=says):
            check_overrides(CleanConfig, bad)
    base = ["pack", "--source", str(tmp_path), "--dest", str(tmp_path / "p")]
    for sets, says in ((["window_s=abc"], "window_s='abc'"), (["qc=1"], "not settable"),
                       (["window_s=0.001"], "whole number of samples")):  # fmt: skip
        rc = main([*base, "--profile", "tokenizer-10s", "--executor", "local", "--set", *sets])
        assert rc == 2 and says in capsys.readouterr().err
