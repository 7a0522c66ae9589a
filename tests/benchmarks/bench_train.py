"""Stage-2 step time from token shards vs inline tokenization (raw 30-s shards), through the
real training stack (loader + DeepSpeed ZeRO-2 step), one process.

    .venv/bin/python tests/benchmarks/bench_train.py [--steps 6] [--micro-batch 2] [--size tiny]

Uses the paper's tokenizer configuration (untrained weights: timing only) exported once, the
small real-recording corpus packed into 30-s shards, ``brainomni.tokenize`` to make token
shards (its throughput is printed too), then BrainOmni (``--size``) for ``--steps`` steps
from each source. Prints the median step time after a warm-up step. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--size", default="tiny", choices=("tiny", "base"))
    a = p.parse_args()
    for k, v in (
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29533"),
    ):
        os.environ.setdefault(k, v)
    import torch

    from brainomni.models import BrainTokenizer
    from brainomni.tokenize import tokenize_corpus
    from brainomni.train import checkpoint
    from brainomni.train.config import apply_overrides, get_recipe
    from brainomni.train.export import CONFIG, model_json
    from brainomni.train.trainer import Trainer
    from tests.loader.data import packed_manifest

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    exp = work / "tokenizer"
    exp.mkdir()
    tok = BrainTokenizer()
    checkpoint.save_model(exp, tok.state_dict(), model_json(tok, "tokenizer"))
    (exp / CONFIG).write_text((exp / "model.json").read_text())
    m30 = packed_manifest("omni-30s")
    n = json.loads(m30.read_text())["totals"]["samples"]
    t0 = time.perf_counter()
    tokenize_corpus(exp, str(m30), str(work / "tokens"), batch_size=8)
    dt = time.perf_counter() - t0
    print(f"tokenize once: {n} samples of 30 s in {dt:.1f} s ({n / dt:.2f} samples/s, 1 process)")
    res = {}
    for source, manifest in (("tokens", work / "tokens" / "manifest.json"), ("raw", m30)):
        cfg = get_recipe(f"paper-omni-{a.size}")
        cfg = apply_overrides(
            cfg,
            [
                f"data.manifest={json.dumps(str(manifest))}",
                f"data.source={source}",
                f"tokenizer={json.dumps(str(exp))}",
                f"data.micro_batch={a.micro_batch}",
                f"global_batch={a.micro_batch}",
                "data.workers=0",
                f"data.chunk={a.micro_batch * 4}",
                f"max_steps={a.steps + 1}",
            ],
        )
        tr = Trainer(cfg, work / f"run-{source}")
        it = iter(tr.loader)
        times = []
        for _ in range(a.steps + 1):
            t = time.perf_counter()
            b = next(it)
            out = tr._forward(b)
            tr.engine.backward(out["loss"])
            tr.engine.step()
            times.append(time.perf_counter() - t)
        res[source] = statistics.median(times[1:])
        print(
            f"stage 2 ({a.size}) from {source:6s}: {res[source]:.3f} s/step "
            f"(micro-batch {a.micro_batch}, {a.micro_batch / res[source]:.2f} samples/s)"
        )
    print(f"inline tokenization costs {res['raw'] / res['tokens']:.2f}x the token-shard step")


if __name__ == "__main__":
    main()
