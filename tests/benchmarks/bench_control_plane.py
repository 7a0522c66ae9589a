"""Control plane at internet scale: every driver-side step on generated metadata.

    PYTHONPATH=. python tests/benchmarks/bench_control_plane.py            # 200,000 recordings
    PYTHONPATH=. python tests/benchmarks/bench_control_plane.py --n 20000  # a tenth

Runs every step (see ``tests/benchmarks/control_plane.py``) at ``--n`` and at ``--n / 4``
in one process, side by side, and prints each step's seconds at both scales and the growth
ratio (4.0 is linear), each step's CPU seconds at ``--n`` (this process and the crawl's
process pool: wall time on a shared machine depends on its load, which is printed too),
each step's peak RSS, and the issue's targets: the plan (crawl and
plan, ledger fold, splits, pack plan; ``ledger segments`` is the driver's work while the
workers run, printed but not in the plan) <= 60 s, manifest load <= 3 s, loader start <= 5 s,
driver RSS <= 2 GB. Peak RSS is measured per step (the kernel's high-water mark, reset
before each step), with only what that step's job would hold alive: the steps belong to
different jobs (ingest, pack, publish, training), each with its own driver.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import control_plane as cp  # noqa: E402

PLAN_STEPS = ("crawl+plan", "ledger fold", "splits", "pack plan", "pack plan hash")
TARGETS = {"plan": 60.0, "manifest load": 3.0, "loader start": 5.0}


def _peak_reset() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the crawl's process pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    n: int, work: str, world: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict]:
    times: dict[str, float] = {}
    cpus: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def timer(name, fn):
        gc.collect()
        _peak_reset()
        t, c = time.perf_counter(), _cpu()
        out = fn()
        times[name] = time.perf_counter() - t
        cpus[name] = _cpu() - c
        peaks[name] = _peak_gb()
        print(
            f"  n={n:>7}  {name:<18} {times[name]:8.2f} s   CPU {cpus[name]:8.2f} s   "
            f"peak RSS {peaks[name]:.2f} GB   load {os.getloadavg()[0]:.1f}"
        )
        sys.stdout.flush()
        return out

    info = cp.run_all(n, work, world=world, timer=timer)
    times["plan"] = sum(times[s] for s in PLAN_STEPS)
    cpus["plan"] = sum(cpus[s] for s in PLAN_STEPS)
    peaks["plan"] = max(peaks[s] for s in PLAN_STEPS)
    return times, cpus, peaks, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="recordings (default 200,000)")
    ap.add_argument("--world", type=int, default=512, help="loader world size (default 512)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        small_t, _, _, _ = measure(args.n // 4, os.path.join(work, "small"), args.world)
        big_t, big_cpu, big_rss, big = measure(args.n, os.path.join(work, "big"), args.world)
    rss = max(big_rss.values())
    print(
        f"\nscale: {big['recordings']} recordings in {big['datasets']} datasets, "
        f"{big['subjects']} subjects, {big['windows']} windows in {big['shards']} shards, "
        f"ledger {big['ledger_rows']} rows, loader world {args.world}"
    )
    print(
        f"load average (1, 5, 15 min) at start {', '.join(f'{x:.1f}' for x in load0)}, "
        f"at end {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    print(
        "\n| step | n/4 (s) | n (s) | growth (4 = linear) | CPU at n (s) | peak RSS at n (GB) "
        "| target |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in [*big_t]:
        target = TARGETS.get(name)
        ok = (
            ""
            if target is None
            else f"<= {target:g} s: {'met' if big_t[name] <= target else 'MISSED'}"
        )
        ratio = big_t[name] / max(small_t[name], 1e-6)
        print(
            f"| {name} | {small_t[name]:.2f} | {big_t[name]:.2f} | {ratio:.2f} "
            f"| {big_cpu[name]:.2f} | {big_rss[name]:.2f} | {ok} |"
        )
    print(
        f"\ndriver peak RSS (the largest step; each job's driver holds only its own inputs): "
        f"{rss:.2f} GB (target <= 2 GB: {'met' if rss <= 2 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
