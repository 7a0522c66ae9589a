"""CPU timings of one training step (forward + backward + AdamW) for the models.

    .venv/bin/python tests/benchmarks/bench_models.py [--threads 2] [--repeats 3] [--bf16]

Prints, for BrainTokenizer on 4 x 64 channels x 10 s and BrainOmni tiny on 4 x 64 x 30 s
(from raw windows, running the frozen tokenizer, and from precomputed indices), the median
step time and its ratio to the official implementation on this machine class (8.0 s and
19.7 s) and to the targets (<= 4 s), and the machine's load average: on a shared machine
compare medians taken under similar load. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from brainomni.models import BrainOmni, BrainTokenizer  # noqa: E402

OFFICIAL_S = {"tokenizer": 8.0, "omni_raw": 19.7, "omni_indices": 19.7}
TARGET_S = 4.0


def batch(b: int, c: int, seconds: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, seconds * 256, generator=g)
    pos = torch.randn(b, c, 6, generator=g)
    st = torch.randint(0, 3, (b, c), generator=g)
    return x, pos, st


def time_steps(step, repeats: int) -> list[float]:
    step()  # warm-up (k-means init, allocator)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="run under torch.autocast(bfloat16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else None

    def run(model, optim, **inputs):
        def step():
            if ctx is None:
                loss = model(**inputs)["loss"]
            else:
                with ctx():
                    loss = model(**inputs)["loss"]
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        return step

    results = {}
    tok = BrainTokenizer().train()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-4, betas=(0.5, 0.9), eps=1e-5)
    x, pos, st = batch(4, 64, 10)
    results["tokenizer"] = time_steps(run(tok, opt, x=x, pos=pos, sensor_type=st), args.repeats)

    omni = BrainOmni("tiny", tokenizer=BrainTokenizer()).train()
    opt = torch.optim.AdamW(
        [p for p in omni.parameters() if p.requires_grad], lr=5e-4, betas=(0.9, 0.95), eps=1e-6
    )
    x, pos, st = batch(4, 64, 30)
    results["omni_raw"] = time_steps(run(omni, opt, x=x, pos=pos, sensor_type=st), args.repeats)
    _, idx = omni.tokens(x, pos, st)
    results["omni_indices"] = time_steps(run(omni, opt, indices=idx), args.repeats)

    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"{'bf16 autocast' if args.bf16 else 'float32'}, repeats={args.repeats}, "
        f"1-min load {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'case':<14}{'median s':>10}{'min s':>8}{'vs official':>13}{'vs 4 s target':>15}")
    for name, ts in results.items():
        med = statistics.median(ts)
        print(
            f"{name:<14}{med:>10.2f}{min(ts):>8.2f}{OFFICIAL_S[name] / med:>12.2f}x"
            f"{med / TARGET_S:>14.2f}x"
        )


if __name__ == "__main__":
    main()
