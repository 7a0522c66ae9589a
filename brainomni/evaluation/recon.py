"""Zero-shot reconstruction report of an exported tokenizer (spec §6, Table 4).

For the validation split and every ``unseen-*`` split of a signal manifest: MSE, MAE, PCC,
amplitude and phase error per sensor type, overall, per dataset and per device, plus the
validation loss the trainer selects its best checkpoint by. The numbers are those the
trainer logs at validation, by construction: the batches come from the same
:class:`~brainomni.loader.ShardLoader` (unshuffled, one epoch) and every batch goes through
the same :func:`brainomni.train.metrics.tokenizer_rows` / :func:`~brainomni.train.metrics.reduce_rows`
and :func:`~brainomni.train.metrics.tokenizer_report`. The per-dataset and per-device rows
are the same per-row metrics reduced over the samples of one dataset (no second forward
pass). Give ``like_run`` (a run folder) to take its batching and batch cap, so that the
report of its checkpoint equals its logged validation; by default every sample of a split
is used.

Datasets come from each sample's JSON metadata (one pass over the split's shards, through
the loader's checked shard reader), devices from the manifest's ``sources`` table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

REPORT = "recon.json"
UNKNOWN = "unknown"


def eval_splits(manifest: dict[str, Any], val_splits: Sequence[str] = ("val",)) -> list[str]:
    """The validation splits present in ``manifest``, then every ``unseen-*`` split, sorted."""
    present = {s["split"] for s in manifest["shards"]}
    return [s for s in val_splits if s in present] + sorted(
        s for s in present if s.startswith("unseen-")
    )


def _run_settings(run: str | Path) -> dict[str, Any]:
    """Batching of a run's validation (its ``config.json``), checked."""
    p = Path(run) / "config.json"
    try:
        cfg = json.loads(p.read_text())["train"]
        d = cfg["data"]
        out = {
            "micro_batch": int(d["micro_batch"]),
            "chunk": int(d["chunk"]),
            "bucket": bool(d["bucket"]),
            "max_batches": int(d["val_max_batches"]),
            "seed": int(cfg["seed"]),
            "val_splits": [str(s) for s in d["val_splits"]],
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{p}: not a pretraining run's config.json ({type(exc).__name__}: {exc}); pass the "
            "run folder written by `brainomni pretrain`, or leave out --like-run"
        ) from exc
    if out["micro_batch"] < 1 or out["chunk"] < out["micro_batch"] or out["max_batches"] < 1:
        raise ValueError(f"{p}: implausible data settings {out}")
    return out


def sample_datasets(
    manifest: dict[str, Any],
    split: str,
    *,
    shards_root: str | None = None,
    read_config: Any = None,
    storage_options: dict | None = None,
) -> dict[str, str]:
    """``{sample key: (dataset, channel layout)}`` of a split, from the samples' JSON
    metadata (layout: the channel counts per type, e.g. ``EEG60+GRAD204+MAG102``). A shard
    that cannot be read is skipped here as the loader skips it (its samples never come)."""
    from brainomni.loader.loader import split_shards
    from brainomni.loader.reader import ReadConfig, ShardFailed, read_shard

    def decode(key: str, m: dict[str, bytes]) -> dict[str, Any]:
        try:
            meta = json.loads(m.get("json", b"{}"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        ds = meta.get("dataset") if isinstance(meta, dict) else None
        ch = meta.get("channels") if isinstance(meta, dict) else None
        layout = (
            "+".join(
                f"{t}{n}"
                for t, n in sorted(ch.items())
                if isinstance(t, str) and type(n) is int and n > 0
            )
            if isinstance(ch, dict)
            else ""
        )
        return {
            "key": key,
            "dataset": ds if isinstance(ds, str) and ds else UNKNOWN,
            "layout": layout or UNKNOWN,
        }

    out: dict[str, str] = {}
    cfg = read_config or ReadConfig()
    for src in split_shards(manifest, split, shards_root):
        try:
            got = read_shard(src, None, decode, cfg, storage_options, schema="raw")
        except ShardFailed as exc:
            log.error("skipping shard for the dataset table: %s", exc)
            continue
        out.update({s["key"]: (s["dataset"], s["layout"]) for s in got.values()})
    return out


def _device_of(manifest: dict[str, Any]) -> dict[str, str]:
    out = {}
    for s in manifest.get("sources") or []:
        if isinstance(s, dict) and isinstance(s.get("dataset"), str):
            dev = s.get("device")
            out[s["dataset"]] = dev if isinstance(dev, str) and dev else UNKNOWN
    return out


def evaluate_split(
    model: Any,
    manifest: dict[str, Any],
    split: str,
    *,
    micro_batch: int = 16,
    chunk: int = 512,
    bucket: bool = True,
    seed: int = 42,
    max_batches: int | None = None,
    shards_root: str | None = None,
    read_config: Any = None,
    storage_options: dict | None = None,
    device: str | torch.device = "cpu",
    datasets: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Sums of one split: ``{"all": (3, M+1), "groups": {(dataset, layout): (3, M+1)},
    "samples": n, "first": first batch}`` (float64 sums, see
    :func:`brainomni.train.metrics.reduce_rows`); ``datasets`` maps sample keys to groups."""
    from brainomni.loader.loader import ShardLoader
    from brainomni.train.metrics import reduce_rows, tokenizer_rows

    loader = ShardLoader(
        manifest,
        split,
        micro_batch=micro_batch,
        workers=0,
        seed=seed,
        chunk=chunk,
        shuffle=False,
        bucket=bucket,
        max_epochs=1,
        shards_root=shards_root,
        read_config=read_config,
        storage_options=storage_options,
    )
    datasets = datasets or {}
    cuda = torch.device(device).type == "cuda"
    total: torch.Tensor | None = None
    by: dict[str, torch.Tensor] = {}
    first, n = None, 0
    for i, b in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
        b["x"] = b["x"].float()
        first = first or b
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        with torch.no_grad(), ctx:  # as the trainer's validation (bf16 on CUDA)
            per = tokenizer_rows(model, b)
        s = reduce_rows(per, b["mask"], b["sensor_type"])
        total = s if total is None else total + s
        names = [datasets.get(k, (UNKNOWN, UNKNOWN)) for k in b["keys"]]
        for name in sorted(set(names)):
            rows = torch.tensor([x == name for x in names], device=b["mask"].device)
            part = reduce_rows(per, b["mask"] & rows[:, None], b["sensor_type"])
            by[name] = part if name not in by else by[name] + part
        n += len(b["keys"])
    if total is None:
        total = torch.zeros(3, 6, dtype=torch.float64)
    return {"all": total, "groups": by, "samples": n, "first": first}


def _clean(sums: torch.Tensor) -> dict[str, Any]:
    """The report of ``sums`` (non-finite values as null) and its row counts per type."""
    from brainomni.records import SENSOR_TYPE_NAMES
    from brainomni.train.metrics import tokenizer_report

    out: dict[str, Any] = {
        k: (v if math.isfinite(v) else None) for k, v in tokenizer_report(sums).items()
    }
    out["rows"] = {
        SENSOR_TYPE_NAMES[t]: int(sums[t, -1]) for t in range(sums.shape[0]) if sums[t, -1] > 0
    }
    return out


def evaluate_recon(
    tokenizer: Any,
    manifest: str | dict[str, Any],
    *,
    out: str | Path | None = None,
    splits: Sequence[str] | None = None,
    like_run: str | Path | None = None,
    micro_batch: int = 16,
    chunk: int = 512,
    max_batches: int | None = None,
    shards_root: str | None = None,
    storage_options: dict | None = None,
    device: str | torch.device = "cpu",
    plots: bool = True,
) -> dict[str, Any]:
    """The zero-shot reconstruction report (see the module doc). ``tokenizer``: an export
    folder or a loaded BrainTokenizer. Writes ``OUT/recon.json`` and, with ``plots``,
    ``OUT/recon-SPLIT.png`` (target and reconstruction of a few channels) and
    ``OUT/recon-devices.png`` (PCC and MSE per device and split) when ``out`` is given."""
    from brainomni.loader.loader import read_manifest
    from brainomni.loader.reader import ReadConfig
    from brainomni.train.export import load_export
    from brainomni.train.metrics import plot_reconstruction, reconstruction_example

    source = str(tokenizer) if isinstance(tokenizer, str | Path) else None
    model = load_export(tokenizer) if source is not None else tokenizer
    if not hasattr(model, "quantizer"):
        raise ValueError(
            f"{source or type(model).__name__} is not a tokenizer export; pass the folder "
            "written by `brainomni export` of a tokenizer run"
        )
    model = model.to(device).eval()
    m = read_manifest(manifest, storage_options)
    if m["format"].startswith("brainomni.token-manifest"):
        raise ValueError(
            f"{manifest if isinstance(manifest, str) else 'the manifest'} is a token manifest: "
            "reconstruction needs the signal shards' manifest"
        )
    settings = {"micro_batch": micro_batch, "chunk": chunk, "bucket": True, "seed": 42}
    val_splits: Sequence[str] = ("val",)
    if like_run is not None:
        rs = _run_settings(like_run)
        val_splits = rs.pop("val_splits")
        max_batches = rs.pop("max_batches")
        settings.update(rs)
    todo = list(splits) if splits else eval_splits(m, val_splits)
    present = {s["split"] for s in m["shards"]}
    missing = [s for s in todo if s not in present]
    if missing:
        raise ValueError(f"splits {missing} are not in the manifest (it has {sorted(present)})")
    devices = _device_of(m)
    rc = ReadConfig()
    report: dict[str, Any] = {
        "tokenizer": source,
        "manifest": {k: m.get(k) for k in ("name", "version", "content_hash")},
        "settings": {**settings, "max_batches": max_batches},
        "splits": {},
    }
    examples = {}
    for split in todo:
        ds_of = sample_datasets(
            m, split, shards_root=shards_root, read_config=rc, storage_options=storage_options
        )
        res = evaluate_split(
            model,
            m,
            split,
            **settings,
            max_batches=max_batches,
            shards_root=shards_root,
            read_config=rc,
            storage_options=storage_options,
            device=device,
            datasets=ds_of,
        )
        # the catalog's device of the dataset; for a dataset it does not know, the channel
        # layout stands in for the device ("unknown: EEG60+GRAD204+MAG102")
        by_ds: dict[str, torch.Tensor] = {}
        by_dev: dict[str, torch.Tensor] = {}
        for (name, layout), s in res["groups"].items():
            dev = devices.get(name, UNKNOWN)
            dev = dev if dev != UNKNOWN else f"{UNKNOWN}: {layout}"
            by_ds[name] = s if name not in by_ds else by_ds[name] + s
            by_dev[dev] = s if dev not in by_dev else by_dev[dev] + s
        report["splits"][split] = {
            "samples": res["samples"],
            "overall": _clean(res["all"]),
            "by_dataset": {
                k: {"device": devices.get(k, UNKNOWN), **_clean(v)}
                for k, v in sorted(by_ds.items())
            },
            "by_device": {k: _clean(v) for k, v in sorted(by_dev.items())},
        }
        if plots and out is not None and res["first"] is not None:
            examples[split] = reconstruction_example(model, res["first"])
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / REPORT).write_text(json.dumps(report, indent=1, sort_keys=True))
        for split, ex in examples.items():
            plot_reconstruction(ex, o / f"recon-{split}.png")
        if plots and report["splits"]:
            plot_devices(report, o / "recon-devices.png")
    return report


def plot_devices(report: dict[str, Any], path: Path) -> Path:
    """Bars of PCC and MSE (all sensor types pooled per device: the mean over types of
    each type's value) per device, one group per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = list(report["splits"])
    devs = sorted({d for s in splits for d in report["splits"][s]["by_device"]})
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.4 * len(devs) + len(splits)), 4.5))
    width = 0.8 / max(1, len(splits))
    for ax, metric in zip(axes, ("pcc", "mse"), strict=True):
        for j, sp in enumerate(splits):
            vals = []
            for d in devs:
                r = report["splits"][sp]["by_device"].get(d, {})
                v = [x for k, x in r.items() if k.endswith(f"/{metric}") and x is not None]
                v = [float(x) for x in v]
                vals.append(float(np.mean(v)) if v else np.nan)
            ax.bar(np.arange(len(devs)) + j * width, vals, width, label=sp)
        ax.set_xticks(
            np.arange(len(devs)) + 0.4 - width / 2, devs, rotation=20, ha="right", fontsize=7
        )
        ax.set_title(f"{metric.upper()} per device (mean over sensor types)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
