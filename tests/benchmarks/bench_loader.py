"""Loader throughput (samples/s per process) from local disk and from an S3 endpoint, and
the padding waste of channel-count bucketing vs plain padding, on the real-recording corpus.

    .venv/bin/python tests/benchmarks/bench_loader.py [--epochs 30] [--micro-batch 8]

Packs the small real-recording corpus (tests/pack/corpus.py) into 10-s shards, then reads the
train split ``--epochs`` times (page cache warm after the first) with one process
(``workers=0``), with and without sha256 verification; then the same from a local moto S3
server. The official per-file loader reads 1,000-2,200 segments/s from page cache. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from brainomni.loader.loader import ShardLoader, read_manifest  # noqa: E402
from brainomni.loader.reader import ReadConfig  # noqa: E402


def rate(manifest: Path, epochs: int, mb: int, **kw) -> tuple[float, dict]:
    ld = ShardLoader(str(manifest), "train", micro_batch=mb, chunk=64, max_epochs=epochs, **kw)
    t0 = time.perf_counter()
    n = sum(b["size"] for b in ld)
    return n / (time.perf_counter() - t0), ld.stats()


def waste(manifest: Path, mb: int, bucket: bool, chunk: int) -> float:
    tot_pad = tot_real = 0
    for split in {s["split"] for s in read_manifest(str(manifest))["shards"]}:
        ld = ShardLoader(
            str(manifest), split, micro_batch=mb, chunk=chunk, max_epochs=1, bucket=bucket
        )
        list(ld)
        st = ld.stats()
        tot_pad += st["padded_elements"]
        tot_real += st["real_elements"]
    return tot_pad / (tot_pad + tot_real)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--micro-batch", type=int, default=8)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tests.loader.data import packed_manifest

    m = packed_manifest("tokenizer-10s")
    info = read_manifest(str(m))
    print(
        f"train split: {info['splits']['train']['samples']} samples of 10 s, "
        f"{sum(1 for s in info['shards'] if s['split'] == 'train')} shards, "
        f"channel counts {sorted(info['channel_hist'], key=int)}"
    )
    res = {}
    rate(m, 1, a.micro_batch)  # warm the page cache
    for verify in (True, False):
        r, _ = rate(m, a.epochs, a.micro_batch, read_config=ReadConfig(verify_sha256=verify))
        res[f"local verify={verify}"] = r
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }.items():
        os.environ[k] = v
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://{host}:{port}"})
    fs.mkdir("bench")
    fs.put(info["shards_root"] + "/", "bench/pack/", recursive=True)
    so = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    for verify in (True, False):
        r, _ = rate(
            m,
            max(3, a.epochs // 5),
            a.micro_batch,
            shards_root="s3://bench/pack",
            storage_options=so,
            read_config=ReadConfig(verify_sha256=verify),
        )
        res[f"s3 (moto, localhost) verify={verify}"] = r
    srv.stop()
    for k, v in res.items():
        print(f"{k:40s} {v:8.0f} samples/s per process")
    for chunk in (16, 64):
        w_b, w_p = waste(m, a.micro_batch, True, chunk), waste(m, a.micro_batch, False, chunk)
        print(
            f"padding waste (all splits, micro {a.micro_batch}, chunk {chunk}): "
            f"bucketing {w_b:.1%}, plain padding {w_p:.1%}"
        )
    print(json.dumps({k: round(v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
