"""Zero-shot reconstruction report: on the checkpoint and split the trainer validated, its
numbers are the trainer's logged validation numbers; the per-dataset/per-device breakdown
recombines into the overall numbers; the whole split is read once by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MEEG_DIR, SKIP_REASON

pytest.importorskip("deepspeed", reason="pretraining needs DeepSpeed")


@pytest.fixture(scope="module")
def best_export(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, its manifest, export of its best checkpoint)."""
    if MEEG_DIR is None:
        pytest.skip(SKIP_REASON)
    from brainomni.train.export import export
    from tests.train.best_run import trained_run

    run = trained_run()
    cfg = json.loads((run / "config.json").read_text())["train"]
    out = export(run, tmp_path_factory.mktemp("recon") / "best", best=True)
    return run, Path(cfg["data"]["manifest"]), out


def test_report_equals_the_logged_validation(best_export, tmp_path):
    from brainomni.evaluation.recon import evaluate_recon
    from tests.train.best_run import val_records

    run, manifest, exp = best_export
    step = json.loads((exp / "config.json").read_text())["step"]
    logged = val_records(run)[step]
    rep = evaluate_recon(exp, str(manifest), like_run=run, out=tmp_path)
    splits = sorted({k.split("/")[0] for k in logged if "/" in k})
    assert set(rep["splits"]) == set(splits) and any(s.startswith("unseen-") for s in splits)
    n = 0
    for split in splits:
        ours = rep["splits"][split]["overall"]
        for key, v in logged.items():
            if key.startswith(f"{split}/"):
                assert ours[key[len(split) + 1 :]] == pytest.approx(v, rel=1e-6, abs=1e-9), key
                n += 1
    assert n >= 2 * 6  # five metrics per type + the loss, per split
    assert (tmp_path / "recon.json").is_file() and (tmp_path / "recon-devices.png").is_file()
    assert {f"recon-{s}.png" for s in splits} <= {p.name for p in tmp_path.iterdir()}


def test_breakdown_recombines_and_the_whole_split_is_read(best_export):
    from brainomni.evaluation.recon import evaluate_recon
    from brainomni.loader.loader import read_manifest

    _, manifest, exp = best_export
    m = read_manifest(str(manifest))
    rep = evaluate_recon(exp, str(manifest), micro_batch=3, plots=False)
    datasets = {s["dataset"]: s["device"] for s in m["sources"]}
    for split, r in rep["splits"].items():
        assert r["samples"] == sum(s["samples"] for s in m["shards"] if s["split"] == split)
        for group in ("by_dataset", "by_device"):
            parts = r[group]
            assert parts, (split, group)
            for t, rows in r["overall"]["rows"].items():
                got = [p for p in parts.values() if t in p["rows"]]
                assert sum(p["rows"][t] for p in got) == rows
                for k in ("mse", "mae", "pcc", "amp", "phase"):
                    mean = sum(p[f"{t}/{k}"] * p["rows"][t] for p in got) / rows
                    assert mean == pytest.approx(r["overall"][f"{t}/{k}"], rel=1e-9)
        for name, p in r["by_dataset"].items():
            assert p["device"] == datasets.get(name, "unknown")
        known = {d for d in datasets.values() if d != "unknown"}
        for dev in r["by_device"]:  # the catalog's device, else the channel layout
            assert dev in known or dev.startswith("unknown: ") and dev != "unknown: unknown"


def test_cli_and_refusals(best_export, tmp_path):
    from brainomni.cli import main

    run, manifest, exp = best_export
    out = tmp_path / "r"
    assert (
        main(
            [
                "evaluate",
                "recon",
                "--tokenizer",
                str(exp),
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--split",
                "val",
                "--max-batches",
                "1",
                "--no-plots",
            ]
        )
        == 0
    )
    rep = json.loads((out / "recon.json").read_text())
    assert list(rep["splits"]) == ["val"] and rep["settings"]["max_batches"] == 1
    with pytest.raises(SystemExit, match="not in the manifest"):
        main(
            [
                "evaluate",
                "recon",
                "--tokenizer",
                str(exp),
                "--manifest",
                str(manifest),
                "--split",
                "nope",
            ]
        )
    with pytest.raises(SystemExit, match="not a pretraining run"):
        main(
            [
                "evaluate",
                "recon",
                "--tokenizer",
                str(exp),
                "--manifest",
                str(manifest),
                "--like-run",
                str(tmp_path),
            ]
        )
