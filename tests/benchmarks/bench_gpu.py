"""Training throughput per GPU for both stages: samples/s, memory, MFU; SDPA and torch.compile.

    .venv/bin/python tests/benchmarks/bench_gpu.py                 # CUDA, the paper's configs
    .venv/bin/python tests/benchmarks/bench_gpu.py --tiny          # any machine, in seconds
    .venv/bin/python tests/benchmarks/bench_gpu.py --only omni-base --channels 306 \\
        --variants eager-sdpa,compile-sdpa --steps 20 --json out.jsonl

Stages and shapes (spec section 4; one GPU, one micro-batch per step, as DeepSpeed runs
each rank before the gradient all-reduce):

- ``tokenizer``: BrainTokenizer (paper config), micro-batch 16, 10-s samples (5 windows of
  2 s at 256 Hz), ``--channels`` sensors (default 64 EEG and 306 MEG, both measured);
- ``omni-tiny`` / ``omni-base``: BrainOmni from precomputed token indices (the tokenize-once
  path of ``brainomni pretrain omni``), micro-batch 8, 30-s samples (16 sources x 120 steps x
  4 codebooks); ``omni-tiny-raw`` runs the frozen tokenizer on signals inside the step too.

A step is forward + backward + AdamW (fused on CUDA) under ``torch.autocast(bfloat16)`` on
CUDA (the paper's precision; float32 on CPU unless ``--bf16``). Variants: attention through
``F.scaled_dot_product_attention`` with the default dispatch (flash / memory-efficient kernels
where eligible: ``eager-sdpa``), restricted to the math kernel (``eager-math``: what attention
costs without fused kernels), and the same under ``torch.compile`` (``compile-sdpa``,
``compile-math``). A variant that fails (e.g. no compiler) is reported with its error.

Figures: samples/s = micro-batch x timed steps / wall time (CUDA synchronised), peak memory
(``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS), and MFU = model FLOPs
per second / the device's peak dense bf16 FLOP/s. Model FLOPs per step are counted once per
stage with ``torch.utils.flop_counter.FlopCounterMode`` on one eager step: matmuls,
convolutions and attention (forward and backward; element-wise ops, norms, the optimizer and
the k-means of the RVQ are not counted), so MFU is the usual "model FLOPs utilisation" and
is the same FLOP count for every variant. Peak FLOP/s: ``--peak-tflops`` or a table of
known GPUs (A100 312, H100/H200 SXM 989, L40S 362, A10G 125 dense bf16 TFLOP/s); none on
CPU. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout

from brainomni.models import BrainOmni, BrainTokenizer  # noqa: E402

PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L40S": 362.0, "A10G": 125.0}
VARIANTS = ("eager-sdpa", "eager-math", "compile-sdpa", "compile-math")
STAGES = ("tokenizer", "omni-tiny", "omni-base", "omni-tiny-raw")
TINY_TOK = dict(n_filters=8, n_dim=32, codebook_size=16, kmeans_iters=2)
TINY_OMNI = dict(lm_dim=32, lm_head=4, lm_depth=2)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for k, v in PEAK_BF16_TFLOPS.items():
        if k in name:
            return v
    return None


def build(stage: str, tiny: bool, device: torch.device, channels: int, micro: int | None):
    """(model, inputs dict, micro-batch) for one stage."""
    g = torch.Generator().manual_seed(0)
    tok_kw = TINY_TOK if tiny else {}
    if stage == "tokenizer":
        b = micro or (2 if tiny else 16)
        seconds = 10
        model = BrainTokenizer(**tok_kw).train()
        inputs = dict(
            x=torch.randn(b, channels, seconds * 256, generator=g),
            pos=torch.randn(b, channels, 6, generator=g),
            sensor_type=torch.randint(0, 3, (b, channels), generator=g),
        )
    else:
        size = "base" if "base" in stage else "tiny"
        b = micro or (2 if tiny else 8)
        model = BrainOmni(size, tokenizer=BrainTokenizer(**tok_kw), **(TINY_OMNI if tiny else {}))
        model.train()
        if stage.endswith("-raw"):
            inputs = dict(
                x=torch.randn(b, channels, 30 * 256, generator=g),
                pos=torch.randn(b, channels, 6, generator=g),
                sensor_type=torch.randint(0, 3, (b, channels), generator=g),
            )
        else:
            tcfg = model.tokenizer.config
            # 30 s with overlap 0.25: the window count the tokenizer yields for 30-s samples
            steps = _latent_steps(model, channels, device)
            inputs = dict(
                indices=torch.randint(
                    0,
                    tcfg.codebook_size,
                    (b, tcfg.n_neuro, steps, tcfg.num_quantizers),
                    generator=g,
                )
            )
    model = model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return model, inputs, b


def _latent_steps(model: BrainOmni, channels: int, device: torch.device) -> int:
    """W for one 30-s sample: tokenise a single short batch on CPU and read the shape."""
    with torch.no_grad():
        x = torch.randn(1, 2, 30 * 256)
        pos = torch.randn(1, 2, 6)
        st = torch.zeros(1, 2, dtype=torch.long)
        _, idx = model.tokens(x, pos, st)
    return int(idx.shape[2])


def make_step(model, inputs, device: torch.device, bf16: bool, compiled: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    kw = dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-6)
    opt = torch.optim.AdamW(params, fused=device.type == "cuda", **kw)
    fwd = torch.compile(model) if compiled else model

    def step():
        ctx = (
            torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        with ctx:
            loss = fwd(**inputs)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sdpa_context(variant: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if variant.endswith("-math"):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(model, inputs, device, bf16: bool) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    step = make_step(model, inputs, device, bf16, compiled=False)
    step()  # warm-up (k-means init of the codebooks, allocator)
    with FlopCounterMode(display=False) as fc:
        step()
    return float(fc.get_total_flops())


def measure(args, stage: str, channels: int, device: torch.device) -> list[dict]:
    rows = []
    model, inputs, b = build(stage, args.tiny, device, channels, args.micro_batch)
    bf16 = device.type == "cuda" or args.bf16
    try:
        flops = count_flops(model, inputs, device, bf16)
    except Exception as exc:  # noqa: BLE001 - reported, the timing still runs
        flops, err = None, f"{type(exc).__name__}: {exc}"
        print(f"FLOP count failed for {stage}: {err}", file=sys.stderr)
    peak = peak_tflops(device, args.peak_tflops)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for variant in args.variants:
        row = dict(
            stage=stage,
            channels=channels if stage in ("tokenizer", "omni-tiny-raw") else None,
            variant=variant,
            micro_batch=b,
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            dtype="bf16" if bf16 else "fp32",
            trainable_params=n_params,
            gflops_per_step=round(flops / 1e9, 2) if flops else None,
        )
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            step = make_step(model, inputs, device, bf16, compiled=variant.startswith("compile"))
            with sdpa_context(variant):
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    step()
                sync(device)
                row["warmup_s"] = round(time.perf_counter() - t0, 2)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    sync(device)
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            sps = b * args.steps / med
            row.update(
                samples_per_s=round(sps, 2),
                step_ms=round(1e3 * med / args.steps, 2),
                step_ms_runs=[round(1e3 * t / args.steps, 2) for t in times],
            )
            if device.type == "cuda":
                row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            else:
                row["peak_rss_gb"] = round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
                )
            if flops and peak:
                row["mfu"] = round(flops * args.steps / med / (peak * 1e12), 4)
        except Exception as exc:  # noqa: BLE001 - one failing variant is a result, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    del model, inputs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="tiny models and batches (CPU smoke)")
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if any)")
    ap.add_argument("--only", action="append", choices=STAGES, help="stages (default: all)")
    ap.add_argument("--channels", type=int, action="append", help="sensors (default 64, 306)")
    ap.add_argument("--micro-batch", type=int, default=None, help="override the paper's")
    ap.add_argument(
        "--variants",
        type=lambda s: tuple(v for v in s.split(",") if v),
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="median over repeats")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compile, k-means)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also append the rows to this JSONL file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device; use --tiny on CPU")
    if device.type == "cpu" and not args.tiny:
        print(
            "no CUDA device: the paper's configurations on CPU take minutes per step; "
            "pass --tiny for a smoke run",
            file=sys.stderr,
        )
    if args.tiny:
        args.steps, args.repeats, args.warmup = min(args.steps, 2), min(args.repeats, 2), 1
    args.variants = args.variants or (("eager-sdpa", "eager-math") if args.tiny else VARIANTS)
    bad = set(args.variants) - set(VARIANTS)
    if bad:
        raise SystemExit(f"unknown variants {sorted(bad)}; choose from {VARIANTS}")
    channels = args.channels or ([16] if args.tiny else [64, 306])
    torch.manual_seed(0)
    rows = []
    for stage in args.only or STAGES:
        for c in channels if stage in ("tokenizer", "omni-tiny-raw") else channels[:1]:
            rows += measure(args, stage, c, device)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(
        f"\ntorch {torch.__version__}, {rows[0]['device'] if rows else device}, "
        f"{'tiny' if args.tiny else 'paper'} configs, {os.cpu_count()} CPUs"
    )
    print("| stage | C | variant | B | samples/s | step ms | GFLOP/step | MFU | peak mem GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = r.get("peak_mem_gb", r.get("peak_rss_gb"))
        if "error" in r:
            print(
                f"| {r['stage']} | {r['channels'] or '-'} | {r['variant']} | {r['micro_batch']} "
                f"| failed: {r['error'][:60]} | | | | |"
            )
            continue
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "-"
        print(
            f"| {r['stage']} | {r['channels'] or '-'} | {r['variant']} | {r['micro_batch']} | "
            f"{r['samples_per_s']} | {r['step_ms']} | {r['gflops_per_step']} | {mfu} | {mem} |"
        )


if __name__ == "__main__":
    main()
