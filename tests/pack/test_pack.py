"""Packing real-recording stores: windows, normalisation, splits, drops, determinism, I/O."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from brainomni.formats.sample import decode_sample
from brainomni.pack import get_profile
from brainomni.pack.run import PlanMismatch, pack
from brainomni.pack.stream import register_fsspec_scheme, shard_list
from brainomni.splits import SplitConfig
from tests.pack.corpus import copy_store
from tests.pack.test_windows import _reference

SMALL = 3_000_000  # bytes: several shards from the small corpus


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory):
    dest = tmp_path_factory.mktemp("pack") / "tok"
    index = pack(str(corpus), str(dest), get_profile("tokenizer-10s", target_shard_bytes=SMALL))
    return dest, index


def _samples(urls):
    import webdataset as wds

    return list(wds.WebDataset(urls, shardshuffle=False).map(decode_sample))


def test_windows_and_normalisation_match_independent_computation(corpus, packed):
    dest, index = packed
    samples = _samples(shard_list(str(dest)))
    assert len(samples) == sum(s["samples"] for s in index["shards"])
    stores = {}
    for p in corpus.glob("recordings/*/*.zarr"):
        g = zarr.open_group(str(p), mode="r")
        stores[g.attrs["provenance"]["recording_id"]] = g
    per_rec = {}
    for s in samples:
        m = s["meta"]
        g = stores[m["recording_id"]]
        per_rec.setdefault(m["recording_id"], []).append(m["start"])
        x = np.asarray(g["signal"][:, m["start"] : m["start"] + 2560], dtype=np.float64)
        types = np.asarray(g["sensor_type"][:])
        assert s["signal"].dtype == np.float16 and s["signal"].shape == (len(types), 2560)
        np.testing.assert_allclose(
            s["signal"].astype(np.float64), _reference(x, types), rtol=2e-3, atol=2e-3
        )
        np.testing.assert_array_equal(s["sensor_type"], types)
        np.testing.assert_array_equal(s["sensors"][:, 3:], np.asarray(g["sensor_ori"][:]))
        assert m["n_channels"] == len(types) and m["subject"] == g.attrs["provenance"]["subject"]
        assert s["__key__"] == f"{m['recording_id']}_{m['start']:010d}"
    # every window of every packed recording, non-overlapping, `while end <= n`
    for rid, starts in per_rec.items():
        n = stores[rid].attrs["n_times"]
        assert sorted(starts) == list(range(0, n - 2560 + 1, 2560))
    kinds = {s["meta"]["modality"] for s in samples}
    assert kinds == {"eeg", "meg", "emeg"}


def test_splits_unseen_and_excluded(packed):
    _, index = packed
    by_ds = {r["dataset"]: r["split"] for r in index["recordings"]}
    assert by_ds["ds005697"] == "unseen-ds005697"
    assert "ds002778" not in by_ds
    assert {"dataset": "ds002778", "reason": "excluded_downstream"}.items() <= next(
        d for d in index["dropped_recordings"] if d["dataset"] == "ds002778"
    ).items()
    assert by_ds["ds004186"] == by_ds["ds005505"]  # HBN releases share participants
    for s in index["shards"]:
        assert {r["split"] for r in s["recordings"]} == {s["split"]}
        assert s["path"] == f"{s['split']}/shard-{s['index']:06d}.tar"
        assert s["bytes"] <= SMALL * 1.05 and len(s["sha256"]) == 64


def test_rerun_parallel_and_resume_are_byte_identical(corpus, packed, tmp_path):
    dest, index = packed
    other = tmp_path / "again"

    def rev_map(fn, items):  # out-of-order, concurrent execution
        with ThreadPoolExecutor(2) as ex:
            futs = {i: ex.submit(fn, i) for i in reversed(list(items))}
            return [futs[i].result() for i in sorted(futs)]

    again = pack(
        str(corpus),
        str(other),
        get_profile("tokenizer-10s", target_shard_bytes=SMALL),
        map_fn=rev_map,
    )
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in index["shards"]]
    # resume: lose one shard, rerun: only it is rewritten, identically
    first = again["shards"][0]
    (other / first["path"]).unlink()
    (other / first["path"].replace(".tar", ".json")).unlink()
    third = pack(str(corpus), str(other), get_profile("tokenizer-10s", target_shard_bytes=SMALL))
    assert (other / first["path"]).exists()
    assert third == again
    with pytest.raises(PlanMismatch):
        pack(
            str(corpus),
            str(other),
            get_profile("tokenizer-10s", dtype="float32", target_shard_bytes=SMALL),
        )


def test_rejected_windows_counted_by_reason(corpus, tmp_path):
    src = next(corpus.glob("recordings/ds004148/*.zarr"))
    st = copy_store(src, tmp_path / "st" / "planted.zarr", recording_id="planted00000000000001")
    g = zarr.open_group(str(st), mode="r+")
    sig = g["signal"]
    w = 2560
    sig[5, 10:20] = np.nan  # window 0
    sig[:, w : 2 * w] = 0.0  # window 1: flat
    x = np.asarray(sig[7, 2 * w : 3 * w])
    sig[7, 2 * w : 3 * w] = np.clip(x, np.percentile(x, 5), np.percentile(x, 95))  # window 2
    index = pack(str(st), str(tmp_path / "out"), get_profile("tokenizer-10s"))
    assert index["rejected_windows"] == {"clipped": 1, "flat": 1, "nonfinite": 1}
    assert sum(s["samples"] for s in index["shards"]) == 12 - 3


def test_float32_and_omni_profile(corpus, tmp_path):
    st = next(corpus.glob("recordings/ds004330/*.zarr"))
    dest = tmp_path / "omni"
    index = pack(
        str(st),
        str(dest),
        get_profile("omni-30s", dtype="float32"),
        SplitConfig(unseen_datasets=(), excluded_datasets=()),
    )
    (s,) = _samples(shard_list(str(dest)))
    assert s["signal"].dtype == np.float32 and s["signal"].shape == (366, 7680)
    assert s["meta"]["channels"] == {"EEG": 60, "MAG": 102, "GRAD": 204}
    assert index["shards"][0]["channel_hist"] == {"366": 1}


def test_stream_from_s3(corpus, s3_server, s3_bucket):
    dest = f"{s3_bucket}/packs/tok"
    st = next(corpus.glob("recordings/ds005241/*.zarr"))
    index = pack(str(st), dest, get_profile("tokenizer-10s"))
    register_fsspec_scheme("s3", {})  # endpoint from the environment (moto)
    urls = shard_list(dest)
    assert urls and all(u.startswith("s3://") for u in urls)
    samples = _samples(urls)
    assert len(samples) == index["shards"][0]["samples"] == 4
    assert samples[0]["signal"].shape == (125, 2560)
    import webdataset as wds

    # webdataset's own decoders read the members too (npy without pickles, json)
    raw = next(iter(wds.WebDataset(urls, shardshuffle=False).decode()))
    assert raw["signal.npy"].shape == (125, 2560) and raw["json"]["dataset"] == "ds005241"


def test_plan_is_frozen_json(packed):
    dest, index = packed
    plan = json.loads((dest / "plan.json").read_text())
    assert plan["config_hash"] == index["pack_config_hash"]
    assert len(plan["shards"]) == len(index["shards"]) + len(index["empty_shards"])


def test_plan_hash_is_computed_once_and_forgotten_on_change(packed, monkeypatch):
    """Every pack unit asks for the plan's hash: it is the sha256 of the frozen JSON,
    computed once per plan object; assigning a field recomputes it."""
    import hashlib

    from brainomni.pack.plan import PackPlan

    dest, index = packed
    doc = json.loads((dest / "plan.json").read_text())
    plan = PackPlan.from_dict(doc)
    expected = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    assert plan.hash == expected == index["plan_hash"]
    calls = []
    real = PackPlan.to_dict
    monkeypatch.setattr(PackPlan, "to_dict", lambda self: calls.append(1) or real(self))
    assert [plan.hash for _ in range(5)] == [expected] * 5 and calls == []
    plan.dropped = [*plan.dropped, {"uri": "x", "recording_id": "", "dataset": "", "reason": "r"}]
    assert plan.hash != expected and len(calls) == 1


def test_ray_pipeline_matches_local(corpus, packed, tmp_path):
    import subprocess
    import sys

    pytest.importorskip("ray")
    dest, index = packed
    out = tmp_path / "ray"
    env = {
        **__import__("os").environ,
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    }
    r = subprocess.run(
        [
            sys.executable,
            "pipelines/pack.py",
            "--store",
            str(corpus),
            "--profile",
            "tokenizer-10s",
            "--dest",
            str(out),
            "--target-shard-mb",
            str(SMALL / 1024 / 1024),
            "--num-cpus",
            "2",
        ],
        cwd=env["PYTHONPATH"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ray_index = json.loads((out / "index.json").read_text())
    assert [s["sha256"] for s in ray_index["shards"]] == [s["sha256"] for s in index["shards"]]
    shutil.rmtree(out)
