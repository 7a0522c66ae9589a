"""Validation passes of the :class:`~.trainer.Trainer`: lock-step batches over every rank,
the tokenizer's reconstruction metrics (and plots), BrainOmni's per-quantizer accuracies.

The methods use the attributes :class:`~.trainer.Trainer` sets up (``cfg``, ``engine``,
``model``, ``manifest``, ``rank``, ``device``...).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..loader.loader import ShardLoader
from .metrics import (
    plot_reconstruction,
    reconstruction_example,
    tokenizer_report,
    tokenizer_sums,
)


class Validation:
    """Mixin of :class:`~.trainer.Trainer`: :meth:`validate` and its passes."""

    def _val_batches(self, split: str):
        """Lock-step batches: ranks that ran out replay their last batch with weight 0, so
        collective ops (ZeRO-3 gathers) stay matched."""
        it = iter(self._loader(split, shuffle=False))
        last = None
        for _ in range(self.cfg.data.val_max_batches):
            b = next(it, None)
            flag = torch.tensor([0 if b is None else 1], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if int(flag) == 0:
                return
            if b is None and last is None:  # this rank has no data at all in the split
                last = self._dummy_batch(split)
            yield (b or last), (0.0 if b is None else 1.0)
            last = b or last

    def _dummy_batch(self, split: str) -> dict[str, Any]:
        ld = ShardLoader(
            self.manifest,
            split,
            rank=0,
            world=1,
            micro_batch=1,
            chunk=1,
            shuffle=False,
            max_epochs=1,
            shards_root=self.cfg.data.shards_root,
            read_config=self.read_config,
        )
        return next(iter(ld))

    def validate(self) -> dict[str, float]:
        self.engine.eval()
        results: dict[str, float] = {}
        splits = list(self.cfg.data.val_splits)
        if self.cfg.kind == "tokenizer" and self.cfg.data.unseen_splits:
            splits += sorted(
                {s["split"] for s in self.manifest["shards"] if s["split"].startswith("unseen-")}
            )
        with torch.no_grad():
            for split in splits:
                if not any(s["split"] == split for s in self.manifest["shards"]):
                    continue
                if self.cfg.kind == "tokenizer":
                    results.update(self._validate_tokenizer(split))
                else:
                    results.update(self._validate_omni(split))
        self.engine.train()
        return results

    def _validate_tokenizer(self, split: str) -> dict[str, float]:
        sums, first = None, None
        for b, w in self._val_batches(split):
            first = first or b
            with self._autocast():
                s = tokenizer_sums(self.model, self._on_device(b), w)
            sums = s if sums is None else sums + s
        sums = sums if sums is not None else torch.zeros(3, 6, dtype=torch.float64)
        dist.all_reduce(sums)
        if self.cfg.plots and first is not None:
            ex = reconstruction_example(
                self.model, self._on_device(first)
            )  # every rank (ZeRO-3 gathers)
            if self.rank == 0:
                plot_reconstruction(
                    ex, self.out / "plots" / f"recon-{split}-step-{self.step:08d}.png"
                )
        return {f"{split}/{k}": v for k, v in tokenizer_report(sums).items()}

    def _validate_omni(self, split: str) -> dict[str, float]:
        Q = self.model.config.num_quantizers_used
        sums = torch.zeros(Q + 3, dtype=torch.float64)  # acc_q..., loss, acc_all, count
        for i, (b, w) in enumerate(self._val_batches(split)):
            g = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1000 + i)
            out = self._forward(b, generator=g)
            vals = [out[f"acc_{q}"] for q in range(Q)] + [out["loss"], out["acc_all"]]
            sums[:-1] += torch.stack([v.detach().double().cpu() for v in vals]) * w
            sums[-1] += w
        dist.all_reduce(sums)
        n = max(float(sums[-1]), 1.0)
        res = {f"{split}/acc_{q}": float(sums[q]) / n for q in range(Q)}
        res[f"{split}/loss"] = float(sums[Q]) / n
        res[f"{split}/acc_all"] = float(sums[Q + 1]) / n
        return res
