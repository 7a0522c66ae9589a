"""results.json, a Markdown table comparable to the paper's (spec §5.3/5.4) and plots.

Each model entry (from :func:`.finetune.run_grid` or :func:`.baselines.run_bandpower`)
contributes the test metrics of its units at the hyper-parameter chosen on validation: one
run per (seed, fold), summarised as mean ± std. Plots: the confusion matrix summed over those
runs, and (binary tasks) one ROC curve per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import LabelledSet
from .finetune import FinetuneConfig, _write_json, load_predictions, set_hash
from .metrics import confusion, metric_names, plot_confusion, plot_roc, summarise

SHORT = {
    "balanced_accuracy": "BACC",
    "auroc": "AUROC",
    "auc_pr": "AUC-PR",
    "cohen_kappa": "Kappa",
    "weighted_f1": "W-F1",
}


def _fmt(s: dict[str, float]) -> str:
    """``.806±.053`` as in the paper's tables."""
    if s["mean"] is None or math.isnan(s["mean"]):
        return "n/a"
    return f"{s['mean']:.3f}".lstrip("0") + "±" + f"{s['std']:.3f}".lstrip("0")


def model_summary(entry: dict[str, Any], n_classes: int) -> dict[str, Any]:
    runs = [u["test"] for u in entry["units"]]
    names = metric_names(n_classes)
    return {
        "selection": entry["selection"],
        "identity": entry["identity"],
        "runs": [
            {"seed": u["seed"], "fold": u["fold"], "best_epoch": u.get("best_epoch"), **u["test"]}
            for u in entry["units"]
        ],
        "val_runs": [{"seed": u["seed"], "fold": u["fold"], **u["val"]} for u in entry["units"]],
        "summary": summarise(runs, names),
        "trainable_parameters": int(entry["units"][0].get("trainable_parameters", 0)),
    }


def write_report(
    out: str | Path,
    windows: LabelledSet,
    cfg: FinetuneConfig,
    entries: Sequence[dict[str, Any]],
    *,
    plots: bool = True,
) -> dict[str, Any]:
    """Write ``out/results.json``, ``out/results.md`` and ``out/plots/*.png``."""
    out = Path(out)
    n_cls = len(windows.classes)
    models = {e["model"]: model_summary(e, n_cls) for e in entries}
    results = {
        "format": "brainomni.downstream-results/1",
        "set": {
            "name": windows.name,
            "classes": windows.classes,
            "counts": windows.counts(),
            "subjects": int(len(set(windows.subjects.tolist()))),
            "windows": len(windows),
            "meta": windows.meta,
            "set_hash": set_hash(windows),
        },
        # the downstream recipe that built the set (manifests/downstream.toml) and its hash;
        # the fine-tuning protocol (FinetuneConfig) by name and in full
        "recipe": windows.meta.get("recipe", ""),
        "recipe_hash": windows.meta.get("recipe_hash", ""),
        "protocol_name": cfg.recipe,
        "protocol": cfg.to_dict(),
        "seeds": list(cfg.seeds),
        "selection": "hyper-parameters and checkpoints chosen on validation only",
        "models": models,
    }
    if plots:
        results["plots"] = _plots(out / "plots", windows.classes, entries)
    _write_json(out / "results.json", results)
    (out / "results.md").write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["set"]
    names = metric_names(len(s["classes"]))
    n_runs = len(results["seeds"]) * results["protocol"]["folds"]
    lines = [
        f"## {s['name'] or 'downstream'}: {len(s['classes'])} classes, {s['subjects']} subjects, "
        f"{s['windows']} windows",
        "",
        f"Test metrics, mean ± std over {n_runs} runs ({results['protocol']['folds']} "
        f"cross-subject folds x seeds {', '.join(map(str, results['seeds']))}); recipe "
        f"`{results['recipe'] or 'n/a'}`, protocol `{results['protocol_name']}`; LR / C "
        "chosen on validation.",
        "",
        "| Model | #P (trainable) | chosen | " + " | ".join(SHORT[n] for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for label, m in results["models"].items():
        sel = m["selection"]
        chosen = f"C={sel['C']:g}" if "C" in sel else f"lr={sel['lr']:.3g}"
        p = m["trainable_parameters"]
        size = f"{p / 1e6:.1f}M" if p >= 1e5 else str(p)
        cells = " | ".join(_fmt(m["summary"][n]) for n in names)
        lines.append(f"| {label} | {size} | {chosen} | {cells} |")
    lines.append("")
    for label, m in results["models"].items():
        lines.append(f"Weights of {label}: sha256 `{m['identity'].get('weights_sha256', 'n/a')}`")
    lines.append(f"Data: set hash `{s['set_hash']}`; meta `{s['meta']}`")
    return "\n".join(lines) + "\n"


def _plots(d: Path, classes: list[str], entries: Sequence[dict[str, Any]]) -> dict[str, list]:
    made: dict[str, list] = {}
    n = len(classes)
    for e in entries:
        cm = np.zeros((n, n), np.int64)
        curves = []
        for u in e["units"]:
            p = load_predictions(Path(u["dir"]))
            y, prob = p["test_labels"], p["test_prob"]
            cm += confusion(y, prob.argmax(1), n)
            if n == 2:
                curves.append((f"seed {u['seed']} fold {u['fold']}", y, prob[:, 1]))
        files = [str(plot_confusion(cm, classes, d / f"confusion-{e['model']}.png", e["model"]))]
        if n == 2:
            files.append(str(plot_roc(curves, d / f"roc-{e['model']}.png", e["model"])))
        made[e["model"]] = files
    return made
