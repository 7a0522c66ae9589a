"""A tiny planted-effect labelled set and a tiny BrainOmni export for the evaluation tests.

Class 1 windows carry a 12 Hz oscillation (on every channel by default), class 0 windows do not;
every subject has its own gain and noise level, so folds by subject are a real
generalisation test. Signals are z-scored per window as for pretraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from brainomni.evaluation.data import LabelledSet, Window

SFREQ = 256.0
T = 256  # samples per window (1 s)
C = 4


def planted_set(
    n_subjects: int = 12,
    per_class: int = 6,
    *,
    effect: float = 6.0,
    planted_channels: int = C,
    seed: int = 0,
    shuffle_labels: bool = False,
    name: str = "planted",
) -> LabelledSet:
    rng = np.random.default_rng(seed)
    t = np.arange(T) / SFREQ
    sensors = np.zeros((C, 6), np.float32)
    sensors[:, 0] = np.linspace(-0.05, 0.05, C)
    sensors[:, 5] = 1.0
    windows = []
    for s in range(n_subjects):
        gain, noise = rng.uniform(0.5, 2.0), rng.uniform(0.8, 1.2)
        for label in (0, 1):
            for k in range(per_class):
                x = noise * rng.standard_normal((C, T))
                if label:
                    phase = rng.uniform(0, 2 * np.pi)
                    x[:planted_channels] += effect * np.sin(2 * np.pi * 12.0 * t + phase)
                x *= gain
                x = (x - x.mean()) / x.std()
                windows.append(
                    Window(
                        x.astype(np.float32),
                        sensors,
                        np.zeros(C, np.int8),
                        label,
                        f"synth/sub-{s:02d}",
                        f"synth/sub-{s:02d}/run-{label}",
                        onset_s=float(k),
                    )
                )
    if shuffle_labels:
        labels = rng.permutation([w.label for w in windows])
        windows = [
            Window(w.signal, w.sensors, w.sensor_type, int(y), w.subject, w.recording_id, w.onset_s)
            for w, y in zip(windows, labels, strict=True)
        ]
    return LabelledSet(windows, ["rest", "planted"], name, {"recipe": "synthetic-planted"})


TINY_TOKENIZER = {
    "window_length": 256,
    "n_filters": 8,
    "n_dim": 32,
    "n_neuro": 4,
    "n_head": 2,
    "codebook_size": 64,
    "num_quantizers": 2,
    "kmeans_iters": 2,
}
TINY_OMNI = {"lm_dim": 16, "lm_head": 4, "lm_depth": 2, "num_quantizers_used": 2}


def tiny_export(out: Path, windows: LabelledSet, *, seed: int = 0, steps: int = 0) -> Path:
    """A BrainOmni export whose tokenizer is trained for ``steps`` Adam steps on the set's
    windows (so that its codes carry the signal); BrainOmni's own weights are random."""
    import torch
    from safetensors.torch import save_file

    from brainomni.evaluation.finetune import collate
    from brainomni.models import BrainOmni, BrainTokenizer, TokenizerConfig
    from brainomni.train.export import model_json

    torch.manual_seed(seed)
    tok = BrainTokenizer(TokenizerConfig(**TINY_TOKENIZER))
    # PyTorch's default (fan-in) initialisation instead of the pretraining init (std 0.02):
    # random features that keep the input's variation, as a trained tokenizer does
    for m in tok.modules():
        if isinstance(m, torch.nn.Conv1d | torch.nn.Linear):
            m.reset_parameters()
    b = collate(windows.windows[:: max(1, len(windows) // 48)])
    tok.train()
    opt = torch.optim.Adam([p for p in tok.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        # source embeddings of norm ~1 (randn gives sqrt(n_dim)): BrainOmni adds them to the
        # unit-norm tokens, and a random model would otherwise see mostly the source identity
        tok.encoder.neuros.mul_(1.0 / tok.encoder.neuros.norm(dim=-1, keepdim=True))
        # centre the latents (a data-dependent bias, as a trained encoder would have): the
        # quantiser L2-normalises them, so an uncentred random encoder puts every window in
        # one narrow cone of directions
        z = tok.encode(b["x"], b["pos"], b["sensor_type"], b["mask"])
        tok.encoder.backwardsolution.proj.bias -= z.mean((0, 1, 2))
    with torch.no_grad():  # k-means initialisation of the codebooks
        tok(b["x"], b["pos"], b["sensor_type"], b["mask"])
    for _ in range(steps):
        loss = tok(b["x"], b["pos"], b["sensor_type"], b["mask"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    omni = BrainOmni("tiny", tokenizer=tok, **TINY_OMNI)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in omni.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model_json(omni, "omni")))
    return out
