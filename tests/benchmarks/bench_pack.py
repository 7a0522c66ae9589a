"""Pack benchmark: stored bytes per channel-hour and throughput in windows/s/core.

    RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_pack.py

Packs the real-recording test corpus (tests/pack/corpus.py: 64-ch EEG, 366-ch EMEG,
125-ch KIT) in one process (one core) for each profile and dtype, and prints:

* bytes per channel-hour = shard bytes / sum(samples x channels x window hours), in MB (1e6)
  — the official code stores 3.69 MB per channel-hour (float32, one .pt file per segment);
* windows/s/core = windows written / wall seconds of the single-process pack (reading the
  Zarr stores, normalising, QC, float16 cast, tar + sha256 to local disk);
* the exact per-sample size for typical channel counts (tar headers and npy headers included).
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from brainomni.formats.sample import encode_sample, members  # noqa: E402
from brainomni.pack import get_profile  # noqa: E402
from brainomni.pack.run import pack  # noqa: E402
from brainomni.splits import SplitConfig  # noqa: E402
from tests.pack.corpus import build_corpus  # noqa: E402

OFFICIAL = 3.69  # MB per channel-hour


def sample_mb_per_channel_hour(c: int, profile: str, dtype: str) -> float:
    cfg = get_profile(profile, dtype=dtype)
    meta = {
        "dataset": "ds000000",
        "subject": "NDARAA000AAA",
        "pos_norm": {"EEG": {"centroid": [0.001, -0.01, 0.03], "scale": 0.1}},
        "scale": {"EEG": 1e-5},
        "recording_id": "0" * 20,
        "start": 123456,
        "channels": {"EEG": c, "MAG": 0, "GRAD": 0},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in members(
            encode_sample(
                "k" * 31,
                np.zeros((c, cfg.window), cfg.dtype),
                np.zeros((c, 6), np.float32),
                np.zeros(c, np.int8),
                meta,
            )
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(blob)
            tar.addfile(ti, io.BytesIO(blob))
    per_sample = buf.tell() - 1024  # minus the end-of-archive blocks
    return per_sample / (c * cfg.window_s / 3600) / 1e6


def main() -> int:
    corpus = build_corpus()
    splits = SplitConfig(unseen_datasets=(), excluded_datasets=())
    print(f"corpus: {corpus}")
    print(
        f"{'profile':<15}{'dtype':<9}{'windows':>8}{'MB/ch-h':>9}{'x official':>11}"
        f"{'win/s/core':>12}"
    )
    for profile, dtype in (
        ("tokenizer-10s", "float16"),
        ("tokenizer-10s", "float32"),
        ("omni-30s", "float16"),
    ):
        cfg = get_profile(profile, dtype=dtype, target_shard_bytes=64 * 1024 * 1024)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            index = pack(str(corpus), d, cfg, splits)
            wall = time.perf_counter() - t0
        n = sum(s["samples"] for s in index["shards"])
        nbytes = sum(s["bytes"] for s in index["shards"])
        ch_h = sum(int(c) * k for s in index["shards"] for c, k in s["channel_hist"].items())
        ch_h *= cfg.window_s / 3600
        mb = nbytes / ch_h / 1e6
        print(f"{profile:<15}{dtype:<9}{n:>8}{mb:>9.3f}{mb / OFFICIAL:>11.2f}{n / wall:>12.1f}")
    print("\nper-sample MB per channel-hour (exact, headers included):")
    print(
        f"{'channels':>9}"
        + "".join(
            f"{p + '/' + d:>24}"
            for p, d in (
                ("tokenizer-10s", "float16"),
                ("omni-30s", "float16"),
                ("tokenizer-10s", "float32"),
            )
        )
    )
    for c in (19, 32, 64, 128, 306, 370):
        row = [
            sample_mb_per_channel_hour(c, p, d)
            for p, d in (
                ("tokenizer-10s", "float16"),
                ("omni-30s", "float16"),
                ("tokenizer-10s", "float32"),
            )
        ]
        print(f"{c:>9}" + "".join(f"{v:>24.3f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
