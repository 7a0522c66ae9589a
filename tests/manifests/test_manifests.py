"""Catalog, publish/verify/diff and the CLI exit codes, on a pack of real recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brainomni.manifests.catalog import load_datasets
from brainomni.manifests.diff import diff
from brainomni.manifests.publish import ManifestExists, load_manifest, publish
from brainomni.manifests.verify import verify
from brainomni.pack import get_profile
from brainomni.pack.run import pack
from brainomni.sources.catalog import load_catalog
from brainomni.splits import LeakageError

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "manifests" / "catalog.toml"


def test_catalog_as_data():
    sources = load_catalog(str(CATALOG))  # the ingest's reader accepts the file
    assert all(s.url.startswith("s3://openneuro.org/ds") for s in sources)
    cat = load_datasets(CATALOG)
    roles = {
        r: [d for d in cat.datasets if d.role == r] for r in ("pretrain", "unseen", "downstream")
    }
    assert len({d.paper_index for d in roles["pretrain"]}) == 22
    assert {d.accession for d in roles["unseen"]} == {"ds005261", "ds005697"}
    assert {"ds002778", "ds004504", "ds005234", "ds003568", "ds006035", "tuab", "tuev"} <= {
        d.accession for d in roles["downstream"]
    }
    assert not {s.name for s in sources} & {d.accession for d in roles["downstream"]}
    cfg = cat.split_config()
    assert cfg.is_excluded("tuh_eeg_abnormal") and cfg.namespace("ds005512") == "hbn"
    assert cat.device("ds004330-1.0.0") == "Elekta Neuromag"


@pytest.fixture(scope="module")
def pack_dir(corpus, tmp_path_factory):
    dest = tmp_path_factory.mktemp("mpack") / "tok"
    pack(str(corpus), str(dest), get_profile("tokenizer-10s", target_shard_bytes=3_000_000))
    return dest


def test_publish_verify_diff(pack_dir, corpus, tmp_path):
    out = tmp_path / "manifests"
    path = publish(str(pack_dir), "brainomni-tok", "1.0.0", out)
    m = load_manifest(path)
    assert {p.name for p in path.parent.iterdir()} == {
        "manifest.json",
        "card.md",
        "hours.png",
        "channels.png",
        "spectra.png",
    }
    assert set(m["splits"]) >= {"unseen-ds005697"}
    assert "ds002778" not in {s["dataset"] for s in m["sources"]}
    assert m["splits"]["unseen-ds005697"]["by_device"] == {
        "Neuroscan SynAmps2": {"samples": 12, "hours": round(120 / 3600, 6)}
    }
    assert all(len(s["sha256"]) == 64 and s["samples"] for s in m["shards"])
    assert verify(m).ok
    with pytest.raises(ManifestExists):
        publish(str(pack_dir), "brainomni-tok", "1.0.0", out)
    with pytest.raises(ValueError, match="semantic version"):
        publish(str(pack_dir), "brainomni-tok", "1.0", out)

    # a changed packing config shows up in diff (and diff of a version with itself is empty)
    dest2 = tmp_path / "tok32"
    pack(
        str(corpus),
        str(dest2),
        get_profile("tokenizer-10s", dtype="float32", target_shard_bytes=3_000_000),
    )
    m2 = load_manifest(publish(str(dest2), "brainomni-tok", "1.1.0", out))
    changes = diff(m, m2)
    assert any(c.startswith("packing: config.dtype 'float16' -> 'float32'") for c in changes)
    assert diff(m, m) == []
    r = _cli("diff", str(path), str(path))
    assert r.returncode == 0 and "no differences" in r.stdout
    r = _cli("diff", str(path), str(out / "brainomni-tok" / "1.1.0" / "manifest.json"))
    assert r.returncode == 1 and "packing: config.dtype" in r.stdout


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "pipelines/publish.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "missing"])
def test_verify_fails_on_damaged_shard(pack_dir, tmp_path, damage):
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(pack_dir, dest)
    path = publish(str(dest), "dmg", "0.1.0", tmp_path / "m")
    m = load_manifest(path)
    shard = dest / m["shards"][-1]["path"]
    data = bytearray(shard.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[: len(data) // 3]))
    else:
        shard.unlink()
    rep = verify(m)
    assert not rep.ok and m["shards"][-1]["path"] in rep.problems[0]
    r = _cli("verify", str(path))
    assert r.returncode == 1 and "FAIL" in r.stdout


def test_publish_refuses_planted_leak(pack_dir, tmp_path):
    import shutil

    dest = tmp_path / "leaky"
    shutil.copytree(pack_dir, dest)
    index = json.loads((dest / "index.json").read_text())
    victim = next(r for r in index["recordings"] if r["split"] == "train")
    twin = dict(victim, recording_id="planted0000000000000", split="test")
    index["recordings"].append(twin)
    (dest / "index.json").write_text(json.dumps(index))
    with pytest.raises(LeakageError, match=f"subject {victim['dataset']}/{victim['subject']}"):
        publish(str(dest), "leaky", "0.1.0", tmp_path / "m")
    assert not (tmp_path / "m" / "leaky" / "0.1.0" / "manifest.json").exists()
    r = _cli(
        "publish",
        "--shards",
        str(dest),
        "--name",
        "leaky",
        "--version",
        "0.1.0",
        "--out",
        str(tmp_path / "m"),
    )
    assert r.returncode == 1 and "leakage check failed" in r.stderr
    # a listed downstream subject is caught as well
    clean = tmp_path / "clean"
    shutil.copytree(pack_dir, clean)
    with pytest.raises(LeakageError, match="downstream"):
        publish(
            str(clean),
            "x",
            "0.1.0",
            tmp_path / "m",
            downstream_subjects=[(victim["dataset"], victim["subject"])],
        )
