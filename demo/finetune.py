"""The last step of ``make demo``: fine-tune the demo's BrainOmni on a planted-effect task.

The task is :func:`brainomni.evaluation.planted.build_planted_bids` (real EEG and MEG
backgrounds from the shared recordings, a 10 Hz or 20 Hz burst planted after each event,
subjects differing by device, segment, gain and noise) with the fine-tuning preset
(``FINETUNE_PRESET``). ``brainomni evaluate downstream --recipe planted`` then fine-tunes the
demo's exported BrainOmni, the same architecture from scratch (random-init) and the classical
baseline (log band power + logistic regression) under the same cross-subject folds; the
balanced accuracies are printed side by side and appended to the demo report.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from demo.bids import meeg_dir

log = logging.getLogger("demo")

PROTOCOL = "cpu-test-finetune"
LABELS = {
    "brainomni": "BrainOmni (demo-pretrained)",
    "random-init": "from scratch (random-init)",
    "bandpower": "band power + logistic regression",
}


def balanced_accuracies(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {"mean", "std", "runs"}}`` of the test balanced accuracy in a
    ``results.json`` of ``brainomni evaluate downstream``."""
    out = {}
    models = results.get("models", {})
    order = [n for n in LABELS if n in models] + sorted(set(models) - set(LABELS))
    for name in order:  # BrainOmni first, then its baselines
        m = models[name]
        s = m.get("summary", {}).get("balanced_accuracy", {})
        runs = [r["balanced_accuracy"] for r in m.get("runs", []) if "balanced_accuracy" in r]
        out[name] = {"mean": s.get("mean"), "std": s.get("std"), "runs": runs}
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The Markdown lines the demo prints and appends to its report."""
    s = results["set"]
    folds = results["protocol"]["folds"]
    lines = [
        "## Planted-effect fine-tune",
        "",
        f"{s['windows']} windows of {s['subjects']} subjects (EEG and MEG), classes "
        f"{', '.join(s['classes'])}; test balanced accuracy over {folds} cross-subject "
        f"folds (protocol `{results['protocol_name']}`; chance 0.5):",
        "",
        "| model | balanced accuracy | per fold |",
        "|---|---|---|",
    ]
    for name, b in balanced_accuracies(results).items():
        mean, std = b["mean"], b["std"]
        cell = "n/a" if mean is None or math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"
        runs = ", ".join(f"{r:.2f}" for r in b["runs"])
        lines.append(f"| {LABELS.get(name, name)} | {cell} | {runs} |")
    return lines


def finetune_and_report(out: Path, report: Path | None, *, synthetic: bool = False) -> str | None:
    """Build the planted task under ``out/planted``, run the downstream evaluation with the
    demo's BrainOmni export (``out/exports/omni``) and append the table to ``report``.
    Returns a one-line summary, or ``None`` when the shared recordings are absent."""
    from brainomni.evaluation.planted import FINETUNE_PRESET, build_planted_bids
    from demo.train import _run

    meeg = None if synthetic else meeg_dir()
    if meeg is None:
        log.warning("planted fine-tune skipped: it needs the shared recordings (../shared/data)")
        return None
    root = out / "planted"
    bids = root / "bids"
    build_planted_bids(str(bids), seed=1, data_root=str(meeg), **FINETUNE_PRESET)
    run = root / "run"
    _run(
        [
            "evaluate",
            "downstream",
            "--recipe",
            "planted",
            "--source",
            str(bids),
            "--work-dir",
            str(root / "work"),
            "--checkpoint",
            str(out / "exports" / "omni"),
            "--dest",
            str(run),
            "--protocol",
            PROTOCOL,
        ],
        "planted fine-tune + baselines",
    )
    results = json.loads((run / "results.json").read_text())
    lines = summary_lines(results)
    lines += ["", f"Full results: `{run / 'results.md'}`, plots in `{run / 'plots'}`", ""]
    print("\n".join(lines))
    if report is not None:
        with open(report, "a") as fh:
            fh.write("\n" + "\n".join(lines))
    bas = balanced_accuracies(results)
    return ", ".join(
        f"{name} BA {b['mean']:.3f}" for name, b in bas.items() if b["mean"] is not None
    )
