"""Training steps on windows cut from a real 64-channel EEG recording."""

from __future__ import annotations

import pytest
import torch

from brainomni.models import BrainTokenizer
from tests.models.realdata import eeg_windows


def test_codebooks_grow_and_dead_codes_are_replaced():
    x, pos, st = eeg_windows(2)  # (62, 64, 512)
    torch.manual_seed(0)
    tok = BrainTokenizer(codebook_size=512).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-4, betas=(0.5, 0.9), eps=1e-5)
    g = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(4)]
    union_sizes, replaced = [], 0
    for step in range(4):
        i = torch.randint(0, len(x), (2,), generator=g)
        ch = torch.randperm(64, generator=g)[:16]
        books = tok.quantizer.rvq.layers
        before = [(b._codebook.embed.clone(), b._codebook.cluster_size.clone()) for b in books]
        out = tok(x[i][:, ch], pos[i][:, ch], st[i][:, ch])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        _, idx = tok.tokenize(x[i][:, ch], pos[i][:, ch], st[i][:, ch])
        for q in range(4):
            seen[q].update(idx[..., q].unique().tolist())
        union_sizes.append(len(seen[0]))
        if step == 0:
            continue
        for (emb, size), layer in zip(before, books, strict=True):
            dead = size[0] < 2.0  # EMA count below the threshold before this step
            cb = layer._codebook
            revived = dead & (cb.cluster_size[0] == 2.0)  # reset to the threshold on replacement
            replaced += int(revived.sum())
            if revived.any():
                assert not torch.allclose(cb.embed[0][revived], emb[0][revived])
    assert replaced > 0, "no dead code was replaced"
    assert union_sizes[-1] > union_sizes[0], union_sizes  # codebook usage grows


@pytest.mark.slow
def test_short_training_lowers_reconstruction_loss():
    x, pos, st = eeg_windows(2)
    torch.manual_seed(0)
    tok = BrainTokenizer(n_filters=8, n_dim=64, codebook_size=64).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3, betas=(0.5, 0.9), eps=1e-5)
    g = torch.Generator().manual_seed(0)
    held = (x[50:, :8], pos[50:, :8], st[50:, :8])

    def held_loss() -> dict[str, float]:
        tok.eval()
        with torch.no_grad():
            out = tok(*held)
        tok.train()
        return {k: v.item() for k, v in out.items()}

    start = held_loss()
    for _ in range(700):  # the official init plateaus for ~500 steps before PCC rises
        i = torch.randint(0, 50, (8,), generator=g)
        ch = torch.randperm(64, generator=g)[:8]
        out = tok(x[i][:, ch], pos[i][:, ch], st[i][:, ch])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    end = held_loss()
    print(
        f"held-out loss {start['loss']:.3f} -> {end['loss']:.3f}; "
        f"time L1 {start['time_loss']:.3f} -> {end['time_loss']:.3f}; "
        f"PCC {start['pcc']:.3f} -> {end['pcc']:.3f}"
    )
    assert end["loss"] < start["loss"] - 0.3
    assert end["pcc"] > 0.2
