"""The training half of ``make demo``: tokenizer -> export -> tokenize once -> BrainOmni tiny
-> export -> a short report (losses, reconstruction plot). CPU recipes, minutes on 2 cores.

Each step is the ``brainomni`` command a user would type, run in this process
(:func:`brainomni.cli.main`): one DeepSpeed process group serves every step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("demo")


def _run(args: list[str], what: str) -> None:
    from brainomni.cli import main

    log.info("%s: brainomni %s", what, " ".join(args))
    t0 = time.perf_counter()
    rc = main(list(args))
    if rc:
        raise RuntimeError(f"`brainomni {' '.join(args)}` exited with {rc}")
    log.info("%s done in %.1f s", what, time.perf_counter() - t0)


def _losses(run: Path, key: str = "loss") -> list[tuple[int, float]]:
    out = []
    f = run / "metrics.jsonl"
    if not f.exists():
        return out
    for line in f.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind", "train") == "train" and key in rec and "step" in rec:
            out.append((int(rec["step"]), float(rec[key])))
    return out


def _val_records(run: Path) -> list[tuple[int, dict[str, float]]]:
    """``[(step, validation record)]`` of a run's ``metrics.jsonl``."""
    out = []
    f = run / "metrics.jsonl"
    for line in f.read_text().splitlines() if f.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "val" and type(rec.get("step")) is int:
            out.append((rec["step"], {k: v for k, v in rec.items() if isinstance(v, float)}))
    return out


def _plot_losses(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5))
    for ax, (name, pts) in zip(axes if len(curves) > 1 else [axes], curves.items(), strict=True):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set(title=name, xlabel="step", ylabel="training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The demo's tokenizer: the cpu-test-tokenizer recipe with these ``k=v`` overrides. A larger
# model than the recipe's (which learns nothing in hundreds of steps), the symmetry-breaking
# ``init="sharp"``, the phase term weighted 0.05 (official 0.5: it slows learning most), and
# cheap steps: 4 recordings x 32 random channels x a random 4-s crop each (validation sees
# whole samples). README, the demo section, gives the measured validation PCC.
TOKENIZER_OVERRIDES: tuple[str, ...] = (
    "model.n_filters=8",
    "model.n_dim=32",
    "model.n_neuro=8",
    "model.codebook_size=64",
    "model.init=sharp",
    "model.phase_weight=0.05",
    "data.train_channels=32",
    "data.train_crop=1024",
    "global_batch=4",
    "optim.lr=3e-3",
    "val_every=50",
    "ckpt_every=50",
    "log_every=10",
)
TOKENIZER_STEPS = 300  # 115 s in the demo on the shared 2-core machine (load ~3)


def train_and_report(
    out: Path,
    manifests: dict[str, Path],
    *,
    steps: int = 30,
    tokenizer_steps: int = TOKENIZER_STEPS,
) -> Path:
    """Run the chain under ``out`` and write ``out/report.md``; returns its path."""
    runs, exports = out / "runs", out / "exports"
    tok_run, tok_export, tokens, omni_run = (
        runs / "tokenizer",
        exports / "tokenizer",
        out / "tokens",
        runs / "omni-tiny",
    )
    _run(
        [
            "pretrain",
            "tokenizer",
            f"max_steps={tokenizer_steps}",
            *TOKENIZER_OVERRIDES,
            "--recipe",
            "cpu-test-tokenizer",
            "--manifest",
            str(manifests["tokenizer-10s"]),
            "--dest",
            str(tok_run),
        ],
        "pretrain tokenizer",
    )
    # the checkpoint of the lowest validation loss (RUN/best.json), not merely the last one
    _run(["export", str(tok_run), str(tok_export), "--best"], "export best tokenizer")
    recon = out / "recon"
    _run(
        [
            "evaluate",
            "recon",
            "--tokenizer",
            str(tok_export),
            "--manifest",
            str(manifests["tokenizer-10s"]),
            "--dest",
            str(recon),
        ],
        "zero-shot reconstruction report",
    )
    _run(
        [
            "tokenize",
            "--tokenizer",
            str(tok_export),
            "--source",
            str(manifests["omni-30s"]),
            "--dest",
            str(tokens),
        ],
        "tokenize 30-s shards",
    )
    _run(
        [
            "pretrain",
            "omni",
            f"max_steps={steps}",
            "--recipe",
            "cpu-test-omni",
            "--tokenizer",
            str(tok_export),
            "--manifest",
            str(tokens / "manifest.json"),
            "--dest",
            str(omni_run),
        ],
        "pretrain BrainOmni tiny",
    )
    # the model the planted fine-tune starts from (demo/finetune.py)
    _run(["export", str(omni_run), str(exports / "omni")], "export BrainOmni tiny")

    curves = {"BrainTokenizer": _losses(tok_run), "BrainOmni tiny (from tokens)": _losses(omni_run)}
    val = _val_records(tok_run)
    _plot_losses(curves, out / "losses.png")
    plots = sorted((tok_run / "plots").glob("*.png")) if (tok_run / "plots").exists() else []
    lines = ["# BrainOmni demo report", ""]
    for name, pts in curves.items():
        if pts:
            lines.append(
                f"- {name}: loss {pts[0][1]:.3f} (step {pts[0][0]}) -> "
                f"{pts[-1][1]:.3f} (step {pts[-1][0]})"
            )
    if len(val) >= 1:
        (s0, v0), (s1, v1) = val[0], val[-1]
        pcc = sorted(k for k in v1 if k.endswith("/pcc"))
        lines.append(
            f"- BrainTokenizer validation loss {v0.get('val/loss', float('nan')):.3f} (step {s0})"
            f" -> {v1.get('val/loss', float('nan')):.3f} (step {s1}); "
            + ", ".join(f"{k} {v0.get(k, float('nan')):.3f} -> {v1[k]:.3f}" for k in pcc)
        )
    lines += ["", "![training losses](losses.png)", ""]
    if plots:
        rel = os.path.relpath(plots[-1], out)
        lines += ["Reconstruction at the last validation:", "", f"![reconstruction]({rel})", ""]
    if (recon / "recon-devices.png").exists():
        lines += [
            "Zero-shot reconstruction of the exported best tokenizer per device "
            f"(`{recon / 'recon.json'}`):",
            "",
            f"![per device]({os.path.relpath(recon / 'recon-devices.png', out)})",
            "",
        ]
    lines += [
        f"Exported tokenizer: `{tok_export}`",
        f"Token shards: `{tokens}`",
        f"Runs: `{tok_run}`, `{omni_run}`",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report
