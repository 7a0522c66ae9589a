"""Fine-tuning throughput (samples/s) and evaluation throughput (windows/s) through the real
stack (DeepSpeed ZeRO-2 engine, the paper's head, one process; CUDA when present).

    .venv/bin/python tests/benchmarks/bench_finetune.py [--size tiny] [--channels 19]
        [--seconds 10] [--windows 96] [--micro-batch 8] [--epochs 2] [--frozen]

The paper's tokenizer and BrainOmni ``--size`` with untrained weights (timing only), exported
once, over synthetic planted-effect windows (``--channels`` x ``--seconds`` at 256 Hz, 12
subjects). Trains one fold for ``--epochs`` epochs and prints the unit's training samples/s and
evaluation windows/s (validation + test). Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="tiny", choices=("tiny", "base"))
    p.add_argument("--channels", type=int, default=19)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--windows", type=int, default=96, help="windows in the set (12 subjects)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--frozen", action="store_true")
    a = p.parse_args()
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from brainomni.evaluation import finetune as ft
    from brainomni.evaluation.data import LabelledSet, Window
    from brainomni.models import BrainOmni
    from brainomni.train.export import model_json

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    model = BrainOmni(a.size)
    (work / "exp").mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(work / "exp/model.safetensors"),
    )
    (work / "exp/config.json").write_text(json.dumps(model_json(model, "omni")))
    rng = np.random.default_rng(0)
    T, C, n_subj = int(a.seconds * 256), a.channels, 12
    sensors = rng.standard_normal((C, 6)).astype(np.float32) * 0.05
    windows = []
    for i in range(a.windows):
        y = i % 2
        x = rng.standard_normal((C, T)).astype(np.float32)
        if y:
            x += 2 * np.sin(2 * np.pi * 12 * np.arange(T) / 256).astype(np.float32)
        x = (x - x.mean()) / x.std()
        windows.append(Window(x, sensors, np.zeros(C, np.int8), y, f"b/sub-{i % n_subj}", f"b/{i}"))
    ws = LabelledSet(windows, ["a", "b"], "bench")
    cfg = ft.apply_overrides(
        ft.paper_finetune(),
        [
            f"epochs={a.epochs}",
            f"patience={a.epochs}",
            f"micro_batch={a.micro_batch}",
            f"global_batch={2 * a.micro_batch}",
            f"eval_batch={2 * a.micro_batch}",
            f"frozen={'true' if a.frozen else 'false'}",
        ],
    )
    ctx = ft.setup_distributed()
    fold = ft.folds_for(ws, k=5, seed=42)[0]
    rec, _ = ft.train_unit(ws, fold, 1e-5, 42, cfg, ft.Backbone(str(work / "exp")), ctx)
    print(
        json.dumps(
            {
                "device": str(ctx.device),
                "size": a.size,
                "frozen": a.frozen,
                "window": f"{C} ch x {a.seconds:g} s",
                "trainable_parameters": rec["trainable_parameters"],
                "train_windows_per_epoch": rec["windows"]["train"],
                "finetune_samples_per_s": round(rec["train_samples_per_s"], 2),
                "eval_windows_per_s": round(rec["eval_windows_per_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
