"""Training-step speed of our models against the plain PyTorch formulation, side by side.

    .venv/bin/python tests/benchmarks/bench_models.py [--threads 2] [--repeats 3]
        [--cases tokenizer,omni] [--compile | --compile-bf16]

One step = forward + backward + AdamW, on CPU. Cases (the issue's configuration):

- ``tokenizer``: BrainTokenizer (paper config) on a batch of 4 x 64 channels x 10 s.
- ``omni``: BrainOmni tiny trained from stored token indices (4 x 16 sources x 160 steps x 4,
  the tokens of 4 x 64 channels x 30 s made once by the tokenizer before timing).

Variants, all in this process with the same weights (loaded by parameter name): ``plain``
(``tests/models/plain_reference.py``: nn.Conv1d/ELU/pad SEANet, written-out attention,
complex RoPE; float32, eager), ``ours fp32``, ``ours bf16`` (``precision="bf16"``, when the
CPU has AMX or AVX512-BF16) and, with ``--compile``, the same with ``compile=True`` (its
compile time - the warm-up steps - is reported on its own line); ``--compile-bf16`` adds
only ``ours bf16 compiled`` (BrainOmni: the bf16 CPU path with compiled elementwise kernels,
which only matter where the C kernels of ``cpu_kernels.py`` are unavailable; run with
``BRAINOMNI_CPU_KERNELS=0`` to time the PyTorch-ops path).
Each variant takes one warm-up step (k-means init, allocator, compilation), then
``--repeats`` rounds run the
variants interleaved (A, B, C, A, B, C, ...) so that a changing machine load hits all alike;
the minimum per variant is reported with its speed-up over ``plain`` and whether the target
holds (tokenizer >= 2x, omni >= 4x). The 1-min load average is printed: on a loaded machine
absolute times grow, the interleaved ratios much less - at one thread. With more OpenMP
threads than idle cores the rounds spread widely and CPU time grows with the number of
kernels (the variants with more, shorter kernels suffer most), so on a shared machine run
``--threads 1`` (README, "Benchmarks"). Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout

from brainomni.models import BrainOmni, BrainTokenizer  # noqa: E402
from brainomni.models.speed import native_bf16  # noqa: E402
from tests.models.plain_reference import copy_weights, plain_omni, plain_tokenizer  # noqa: E402

TARGETS = {"tokenizer": 2.0, "omni": 4.0}


def batch(b: int, c: int, seconds: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, seconds * 256, generator=g)
    pos = torch.randn(b, c, 6, generator=g)
    st = torch.randint(0, 3, (b, c), generator=g)
    return x, pos, st


def make_step(model: torch.nn.Module, lr: float, betas: tuple[float, float], eps: float, inputs):
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps)

    def step() -> None:
        loss = model(**inputs)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def variants(compile_: str) -> list[tuple[str, dict]]:
    """``compile_``: "" (none), "all" (every variant also compiled) or "bf16" (only the
    bf16 one: BrainOmni's compiled elementwise kernels, no whole-model compile in fp32)."""
    out = [("ours fp32", {})]
    if native_bf16("cpu"):
        out.append(("ours bf16", {"precision": "bf16"}))
    if compile_:
        todo = [(n, kw) for n, kw in out if compile_ == "all" or "bf16" in n]
        out += [(f"{n} compiled", {**kw, "compile": True}) for n, kw in todo]
    return out


def tokenizer_steps(compile_: str) -> dict:
    x, pos, st = batch(4, 64, 10)
    inputs = {"x": x, "pos": pos, "sensor_type": st}
    hp = {"lr": 2e-4, "betas": (0.5, 0.9), "eps": 1e-5}
    torch.manual_seed(0)
    ref = plain_tokenizer().train()
    steps = {"plain": make_step(ref, inputs=inputs, **hp)}
    for name, kw in variants(compile_):
        m = BrainTokenizer(**kw).train()
        copy_weights(m, ref)
        steps[name] = make_step(m, inputs=inputs, **hp)
    return steps


def omni_steps(compile_: str) -> dict:
    torch.manual_seed(0)
    tok = BrainTokenizer().eval()
    x, pos, st = batch(4, 64, 30)
    _, idx = tok.tokenize(x, pos, st, overlap_ratio=0.25)  # the stored indices (B, S, W, Q)
    assert tuple(idx.shape) == (4, 16, 160, 4), idx.shape
    inputs = {"indices": idx}
    hp = {"lr": 5e-4, "betas": (0.9, 0.95), "eps": 1e-6}
    ref = plain_omni("tiny", tokenizer=tok).train()
    steps = {"plain": make_step(ref, inputs=inputs, **hp)}
    for name, kw in variants(compile_):
        m = BrainOmni("tiny", tokenizer=tok, **kw).train()
        copy_weights(m, ref)
        steps[name] = make_step(m, inputs=inputs, **hp)
    return steps


def run_case(name: str, steps: dict, repeats: int) -> None:
    warm = {}
    for v, step in steps.items():
        t0 = time.perf_counter()
        step()  # warm-up: k-means init, allocator, compilation
        warm[v] = time.perf_counter() - t0
    times: dict[str, list[float]] = {v: [] for v in steps}
    cpu: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(repeats):
        for v, step in steps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    base, base_cpu = min(times["plain"]), min(cpu["plain"])
    print(f"\n{name}: target >= {TARGETS[name]:.0f}x the plain formulation (wall-clock minimum)")
    print(f"  {'variant':<22}{'min s':>8}{'all s':>26}{'speed-up':>10}  target  (CPU s, speed-up)")
    for v, ts in times.items():
        ratio = base / min(ts)
        ok = "-     " if v == "plain" else ("holds " if ratio >= TARGETS[name] else "missed")
        all_s = " ".join(f"{t:.2f}" for t in ts)
        c = min(cpu[v])
        print(
            f"  {v:<22}{min(ts):>8.2f}{all_s:>26}{ratio:>9.2f}x  {ok}  ({c:.2f}, {base_cpu / c:.2f}x)",
            flush=True,
        )
    for v, w in warm.items():
        if "compiled" in v:
            print(f"  {v}: warm-up step incl. compilation {w:.1f} s (not in the step times)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="tokenizer,omni")
    ap.add_argument("--compile", action="store_true", help="also time compile=True variants")
    ap.add_argument(
        "--compile-bf16", action="store_true", help="also time the bf16 variant with compile=True"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in TARGETS:
            ap.error(f"--cases: unknown case {c!r}; use {','.join(TARGETS)}")
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"cpu {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16('cpu')}, "
        f"repeats={args.repeats} (min, warm-up excluded, variants interleaved), "
        f"1-min load {load:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    builders = {"tokenizer": tokenizer_steps, "omni": omni_steps}
    for c in cases:
        compile_ = "all" if args.compile else "bf16" if args.compile_bf16 else ""
        run_case(c, builders[c](compile_), args.repeats)
    print(f"\n1-min load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
