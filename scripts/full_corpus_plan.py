"""The full-corpus plan: core-hours, bytes, requests, cluster size, GPU-hours and cost.

    python scripts/full_corpus_plan.py                       # the paper's corpus (catalog)
    python scripts/full_corpus_plan.py --hours my_hours.toml # your corpus: dataset = hours
    python scripts/full_corpus_plan.py --json                # the figures as JSON

Prints the Markdown tables of ``docs/full-corpus.md``. Every figure is a formula over
inputs that sit at the top of this file, so a lab can redo the plan for its own corpus
(``--hours``), machines (``--cpu-scale``) and prices (``--prices``). Inputs:

* hours per dataset: the paper gives only the totals (1,997 h EEG + 656 h MEG); the split
  per dataset is **estimated** here from the subjects in the catalog and a typical recording
  time per subject (``MINUTES_PER_SUBJECT``), scaled to the paper's totals;
* CPU-s per recording-hour of ingest: measured by ``tests/benchmarks/bench_preprocess.py``
  (one-hour recordings tiled from real files, one core) and fitted as a + b x channels x
  input rate (see ``MEASURED``);
* bytes: the store is float32 at 256 Hz (uncompressed); shards are float16 with ~4 KB of
  tar headers per sample (``bench_pack.py``: 1.85-1.90 MB per channel-hour for 10-s
  windows);
* GPU-hours: the paper's 16 x A100 wall times (secondary source, spec section 4);
* prices: public on-demand list prices (``PRICES``; check them, they change).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_HOURS = {"eeg": 1997.0, "meg": 656.0}  # spec section 1 (EMEG counts as MEG)

# Typical recorded minutes per subject (our estimate from each dataset's description in the
# spec; the paper gives none). Only the ratios within a modality matter: the sums are scaled
# to PAPER_HOURS.
MINUTES_PER_SUBJECT = {
    "ds002680": 60,
    "ds002721": 40,
    "ds003555": 120,
    "ds003775": 10,
    "ds004148": 30,
    "ds004186": 5,
    "ds004357": 60,
    "ds004796": 60,
    "ds005505": 45,
    "ds005506": 45,
    "ds005507": 45,
    "ds005508": 45,
    "ds005509": 45,
    "ds005510": 45,
    "ds005511": 45,
    "ds005512": 45,
    "ds005620": 60,
    "meg-masc": 120,
    "meg-narrative": 600,
    "omega": 10,
    "camcan": 30,
    "ds003682": 60,
    "ds004107": 60,
    "ds004078": 360,
    "ds004212": 600,
    "ds004276": 60,
    "ds004330": 60,
    "ds005241": 60,
    "kymata-soto": 60,
    "ds005697": 60,
    "ds005261": 30,
}
# HBN releases: subjects per release are not in the catalog (1,897 over eight releases).
HBN_SUBJECTS = {f"ds00550{i}": 1897 / 8 for i in range(5, 10)} | {
    f"ds00551{i}": 1897 / 8 for i in range(0, 3)
}
AVG_RECORDING_H = {"eeg": 0.4, "meg": 0.6}  # typical length of one file (requests, tasks)

# Measured: CPU-s per recording-hour, one core, fresh process (bench_preprocess.py, --minutes
# 60 --repeat 3, median; session of 2026-11-29, 2-core VM): (kept channels, input Hz, s/h).
MEASURED = {
    "Neuromag 306+60 @ 300 Hz": (366, 300.3, 9.31),
    "Neuromag 306 @ 1 kHz": (306, 1000.0, 11.99),
    "CTF 275 @ 1.2 kHz": (281, 1200.0, 13.24),
    "KIT 125 @ 1 kHz": (125, 1000.0, 4.95),
    "64-ch EEG @ 1 kHz": (64, 1000.0, 3.01),
}
RAY_EFFICIENCY = 0.74  # bench_ingest.py: the Ray job reached 74 % of direct calls
NODE_READ_MB_S = 200.0  # sustained object-store read per node (assumption; measure yours)

STORE_HZ = 256.0
SHARD_MB_PER_CHANNEL_HOUR = 1.9  # float16, 10-s windows, tar headers included
STORE_CHUNK_SAMPLES = 256 * 60  # one store chunk: 60 s of one row chunk (see stores/)
STORE_ROW_CHUNK = 34
SHARD_MB = 256  # target shard size
MULTIPART_MB = 8

# GPU: A100-hours for the paper's runs (spec section 4: ~11 h tokenizer, ~18 h base on 16).
PAPER_GPU_HOURS = {"BrainTokenizer (16 epochs)": 11 * 16, "BrainOmni base (32 epochs)": 18 * 16}
# Stage -> (window s, stride s, epochs): 10-s windows for the tokenizer, 30-s with overlap
# 0.25 (stride 22.5 s) for BrainOmni (spec section 4).
STAGES = {
    "BrainTokenizer (16 epochs)": (10.0, 10.0, 16),
    "BrainOmni base (32 epochs)": (30.0, 22.5, 32),
}

PRICES = {  # USD, public on-demand list prices (AWS us-east-1; check before use)
    "vcpu_hour": 1.428 / 32,  # c7i.8xlarge: 32 vCPU for $1.428/h
    "a100_hour": 32.77 / 8,  # p4d.24xlarge: 8 x A100 40 GB for $32.77/h
    "s3_gb_month": 0.023,
    "s3_put_per_1000": 0.005,
    "s3_get_per_1000": 0.0004,
}


def fit_cost() -> tuple[float, float, float]:
    """Least squares ``a + b * channels * kHz_in + c * channels`` over MEASURED: the input
    side (reading, filtering) scales with channels x input rate, the output side (statistics,
    store writes at 256 Hz) with channels alone. Residuals on the five cases: <= 0.5 s/h."""
    import numpy as np

    x = np.array([[1.0, c * hz / 1000, c] for c, hz, _ in MEASURED.values()])
    y = np.array([s for *_, s in MEASURED.values()])
    a, b, c = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(a), float(b), float(c)


def cpu_cost(channels: int, sfreq: float) -> float:
    """CPU-s per recording-hour of ingest for a device (see :func:`fit_cost`)."""
    a, b, c = fit_cost()
    return a + b * channels * sfreq / 1000 + c * channels


def load_datasets(catalog: Path) -> list[dict]:
    data = tomllib.loads(catalog.read_text())
    return [d for d in data.get("dataset", []) if d.get("role") in ("pretrain", "unseen")]


def estimate_hours(datasets: list[dict], given: dict[str, float] | None) -> dict[str, float]:
    if given:
        return {d["accession"]: float(given.get(d["accession"], 0.0)) for d in datasets}
    raw: dict[str, float] = {}
    for d in datasets:
        subj = d.get("subjects") or HBN_SUBJECTS.get(d["accession"], 20)
        raw[d["accession"]] = subj * MINUTES_PER_SUBJECT.get(d["accession"], 60) / 60
    out = {}
    for mod in ("eeg", "meg"):
        group = [
            d["accession"]
            for d in datasets
            if d["role"] == "pretrain" and ("meg" if d["modality"] != "eeg" else "eeg") == mod
        ]
        total = sum(raw[a] for a in group)
        for a in group:
            out[a] = raw[a] * PAPER_HOURS[mod] / total
    for d in datasets:  # unseen-device sets: as estimated, not scaled
        out.setdefault(d["accession"], raw[d["accession"]])
    return out


def plan(datasets: list[dict], hours: dict[str, float], cpu_scale: float = 1.0) -> dict:
    a, b, c = fit_cost()
    rows, tot = (
        [],
        {
            "hours": 0.0,
            "cpu_h": 0.0,
            "store_gb": 0.0,
            "shard_gb": 0.0,
            "recordings": 0,
            "put": 0,
            "get": 0,
            "source_gb": 0.0,
        },
    )
    for d in datasets:
        h = hours[d["accession"]]
        ch, hz = int(d.get("channels") or 64), float(d.get("sfreq") or 1000)
        mod = "eeg" if d["modality"] == "eeg" else "meg"
        cpu_s_h = cpu_cost(ch, hz) * cpu_scale
        cpu_h = h * cpu_s_h / 3600 / RAY_EFFICIENCY
        source_gb = h * 3600 * hz * ch * (2 if mod == "eeg" else 4) / 1e9  # int16 EEG, f32 MEG
        store_gb = h * 3600 * STORE_HZ * ch * 4 / 1e9
        shard_gb = h * ch * SHARD_MB_PER_CHANNEL_HOUR / 1e3 * (1 + 4 / 3)  # 10 s + 30 s (ovl)
        n_rec = max(1, math.ceil(h / AVG_RECORDING_H[mod]))
        chunks = math.ceil(ch / STORE_ROW_CHUNK) * math.ceil(
            h * 3600 * STORE_HZ / STORE_CHUNK_SAMPLES
        )
        put = chunks + n_rec * 6 + math.ceil(shard_gb * 1e3 / MULTIPART_MB)  # + markers/ledger
        get = math.ceil(source_gb * 1e3 / MULTIPART_MB) + n_rec * 4 + chunks  # + pack reads
        rows.append(
            {
                "dataset": d["accession"],
                "role": d["role"],
                "device": d.get("device", ""),
                "channels": ch,
                "sfreq": hz,
                "hours": h,
                "cpu_s_per_h": cpu_s_h,
                "core_hours": cpu_h,
                "source_gb": source_gb,
                "store_gb": store_gb,
                "shard_gb": shard_gb,
                "recordings": n_rec,
                "put": put,
                "get": get,
            }
        )
        tot["hours"] += h
        tot["cpu_h"] += cpu_h
        tot["store_gb"] += store_gb
        tot["shard_gb"] += shard_gb
        tot["source_gb"] += source_gb
        tot["recordings"] += n_rec
        tot["put"] += put
        tot["get"] += get
    return {"fit": {"a": a, "b": b, "c": c}, "rows": rows, "totals": tot}


def cluster(tot: dict, wall_h: float = 24.0, node_vcpu: int = 32) -> dict:
    """Nodes for one day's ingest: enough cores for the CPU work and enough nodes to read the
    sources at NODE_READ_MB_S each; the wall time those nodes take."""
    cores = math.ceil(tot["cpu_h"] / wall_h)
    by_cpu = math.ceil(cores / node_vcpu)
    read_h_one_node = tot["source_gb"] * 1e3 / NODE_READ_MB_S / 3600
    by_read = math.ceil(read_h_one_node / wall_h)
    nodes = max(by_cpu, by_read, 1)
    wall = max(tot["cpu_h"] / (nodes * node_vcpu), read_h_one_node / nodes)
    return {
        "cores": cores,
        "nodes_by_cpu": by_cpu,
        "nodes_by_read": by_read,
        "nodes": nodes,
        "read_h_one_node": read_h_one_node,
        "wall_h": wall,
    }


def costs(tot: dict, prices: dict) -> dict:
    gpu_h = sum(PAPER_GPU_HOURS.values())
    storage_gb = tot["store_gb"] + tot["shard_gb"]
    return {
        "ingest_cpu": tot["cpu_h"] * prices["vcpu_hour"],
        "storage_month": storage_gb * prices["s3_gb_month"],
        "requests": tot["put"] / 1000 * prices["s3_put_per_1000"]
        + tot["get"] / 1000 * prices["s3_get_per_1000"],
        "gpu": gpu_h * prices["a100_hour"],
        "gpu_hours": gpu_h,
    }


def gpu_plan(tot: dict, measured: dict[str, float] | None = None) -> list[dict]:
    """GPU-hours per stage = epochs x samples per epoch / (samples/s per GPU) / 3600, with
    the paper's wall time (what throughput it implies) and ours where measured."""
    out = []
    for stage, (_win, stride, epochs) in STAGES.items():
        per_epoch = tot["hours"] * 3600 / stride
        paper_h = PAPER_GPU_HOURS[stage]
        implied = epochs * per_epoch / (paper_h * 3600)
        ours = (measured or {}).get(stage)
        out.append(
            {
                "stage": stage,
                "samples_per_epoch": per_epoch,
                "epochs": epochs,
                "paper_gpu_hours": paper_h,
                "paper_implied_samples_per_s": implied,
                "our_samples_per_s": ours,
                "our_gpu_hours": epochs * per_epoch / ours / 3600 if ours else None,
            }
        )
    return out


def markdown(p: dict, cl: dict, c: dict) -> str:
    out = [
        "| dataset | role | device | ch | Hz | hours (est.) | CPU-s/h | core-h | store GB | shards GB | recordings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        out.append(
            f"| {r['dataset']} | {r['role']} | {r['device'][:40]} | {r['channels']} | {r['sfreq']:g} "
            f"| {r['hours']:.0f} | {r['cpu_s_per_h']:.1f} | {r['core_hours']:.2f} | {r['store_gb']:.0f} "
            f"| {r['shard_gb']:.0f} | {r['recordings']} |"
        )
    t = p["totals"]
    out += [
        "",
        f"Fit: CPU-s per recording-hour = {p['fit']['a']:.2f} + {p['fit']['b']:.4f} x channels "
        f"x input kHz + {p['fit']['c']:.4f} x channels.",
        "",
        "| total | value |",
        "|---|---|",
        f"| recording-hours | {t['hours']:.0f} |",
        f"| recordings (files) | {t['recordings']:,} |",
        f"| ingest core-hours (Ray efficiency {RAY_EFFICIENCY:.0%} included) | {t['cpu_h']:.1f} |",
        f"| source bytes read | {t['source_gb']:.0f} GB |",
        f"| stores (float32, 256 Hz) | {t['store_gb']:.0f} GB |",
        f"| shards (float16; 10-s and 30-s overlapped profiles) | {t['shard_gb']:.0f} GB |",
        f"| object-store PUT / GET requests | {t['put']:,} / {t['get']:,} |",
        f"| reading the sources on one node at {NODE_READ_MB_S:g} MB/s | {cl['read_h_one_node']:.1f} h |",
        f"| Ray cluster for one day's ingest | {cl['nodes']} node(s) of 32 vCPU (CPU needs "
        f"{cl['cores']} core(s), reading {cl['nodes_by_read']} node(s)); wall time "
        f"{cl['wall_h']:.1f} h |",
        f"| GPU-hours (paper, 16 x A100) | {c['gpu_hours']} A100-h |",
        "",
        "| stage | samples per epoch | epochs | A100-h (paper) | implied samples/s per GPU | ours |",
        "|---|---|---|---|---|---|",
        *[
            f"| {g['stage']} | {g['samples_per_epoch']:,.0f} | {g['epochs']} | "
            f"{g['paper_gpu_hours']} | {g['paper_implied_samples_per_s']:.1f} | "
            + (
                f"{g['our_gpu_hours']:.0f} GPU-h at {g['our_samples_per_s']:.1f}/s"
                if g["our_samples_per_s"]
                else "unmeasured: pass `--gpu-tokenizer` / `--gpu-omni` (`bench_gpu.py`)"
            )
            + " |"
            for g in c["gpu_stages"]
        ],
        "",
        "| cost (USD, list prices) | value |",
        "|---|---|",
        f"| ingest CPU | {c['ingest_cpu']:.2f} |",
        f"| storage per month (stores + shards) | {c['storage_month']:.2f} |",
        f"| requests | {c['requests']:.2f} |",
        f"| pretraining both stages (A100) | {c['gpu']:.0f} |",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--catalog", type=Path, default=ROOT / "manifests" / "catalog.toml")
    ap.add_argument("--hours", type=Path, help="TOML of dataset = hours (replaces the estimate)")
    ap.add_argument("--cpu-scale", type=float, default=1.0, help="your core's speed vs ours")
    ap.add_argument("--prices", type=Path, help="TOML overriding PRICES keys")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--gpu-tokenizer", type=float, help="measured tokenizer samples/s per GPU")
    ap.add_argument("--gpu-omni", type=float, help="measured BrainOmni base samples/s per GPU")
    a = ap.parse_args(argv)
    datasets = load_datasets(a.catalog)
    given = tomllib.loads(a.hours.read_text()) if a.hours else None
    prices = dict(PRICES) | (tomllib.loads(a.prices.read_text()) if a.prices else {})
    p = plan(datasets, estimate_hours(datasets, given), a.cpu_scale)
    cl, c = cluster(p["totals"]), costs(p["totals"], prices)
    measured = {}
    if a.gpu_tokenizer:
        measured["BrainTokenizer (16 epochs)"] = a.gpu_tokenizer
    if a.gpu_omni:
        measured["BrainOmni base (32 epochs)"] = a.gpu_omni
    c["gpu_stages"] = gpu_plan(p["totals"], measured)
    if a.json:
        print(json.dumps({"plan": p, "cluster": cl, "costs": c}, indent=1))
    else:
        print(markdown(p, cl, c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
