"""Saving and resuming a run: the :class:`~.trainer.Trainer`'s checkpoint methods.

Resume is exact: the DeepSpeed state (weights, optimizer, LR schedule), every rank's loader
cursor and RNG states are restored, so a killed and resumed run reproduces the losses and the
sample order of an unbroken one.

Resume with another number of ranks: ZeRO's partitioned state is converted once (rank 0) into
a DeepSpeed universal checkpoint (``step-N/ds-universal``, :func:`.checkpoint.to_universal`)
and loaded into the new layout; module buffers (the RVQ's EMA codebook statistics) and frozen
weights, which the universal format does not carry, come from the checkpoint's
``model.safetensors``, and the restored weights are checked against it. Step count, LR
schedule and Adam moments continue; gradient accumulation follows the new world so that the
global batch is unchanged. The loader re-plans the samples the old ranks had not yet
delivered over the new ranks (each is seen exactly once); ranks that did not exist seed their
RNGs from ``(seed, rank, step)``. The loss curve continues but is not bit-identical to an
unbroken run (other micro-batches, other reduction order). ZeRO-0 needs no conversion.

The methods use the attributes :class:`~.trainer.Trainer` sets up (``cfg``, ``out``,
``rank``, ``world``, ``engine``, ``model``, ``loader``, ``best``...).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import checkpoint as ckpt

log = logging.getLogger(__name__)


class Checkpointing:
    """Mixin of :class:`~.trainer.Trainer`: save, resume, the best-checkpoint record."""

    def resume(self) -> bool:
        """Load the latest complete checkpoint (called by the constructor with
        ``resume=True``); False when there is none."""
        if self._resume_from is None:
            return False
        d, meta = self._resume_from
        other_world = meta["world"] != self.world
        if other_world and self.cfg.zero_stage > 0 and not self.universal:
            raise RuntimeError(
                f"{d} was saved with {meta['world']} ranks, this run has {self.world}: build "
                "the trainer with Trainer(cfg, out, resume=True) so that DeepSpeed loads the "
                "ZeRO state as a universal checkpoint"
            )
        step = int(meta["step"])
        if self.universal:
            log.info(
                "%s was saved with %d ranks, this run has %d: loading it as a universal checkpoint",
                d,
                meta["world"],
                self.world,
            )
            tag = self._universal_tag(d, meta["world"])
        else:
            tag = "ds"
        with ckpt.weights_only_loads(
            d / tag
        ):  # DeepSpeed's own loads (which disable weights_only) included
            load_path, _ = self.engine.load_checkpoint(str(d), tag=tag)
        if load_path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {d / tag}")
        if self.universal:
            self._restore_outside_optimizer(d)
        loaders, rng = ckpt.load_rank_files(d, self.rank)
        self.loader.load_state_dict(loaders)
        if rng is not None:
            ckpt.set_rng_state(rng)
        else:  # a rank the saved run did not have: seeded from (seed, rank, step)
            s = self.cfg.seed * 1_000_003 + self.rank * 7_919 + step
            torch.manual_seed(s)
            random.seed(s)
        self.step = step
        self.resumed_from = d
        log.info(
            "resumed from %s (step %d, saved with %d ranks, now %d)",
            d,
            self.step,
            meta["world"],
            self.world,
        )
        return True

    def _resume_best(self) -> dict[str, Any] | None:
        """Rank 0's reading of ``OUT/best.json`` for every rank (they must agree on when a
        new best is saved). A best after the resumed step is dropped (that step is redone)."""
        rec: list[Any] = [None]
        if self.rank == 0:
            try:
                best = ckpt.read_best(self.out)
            except ckpt.CheckpointError as exc:
                log.warning("%s: starting the best-checkpoint record afresh", exc)
                best = None
            if best is not None and (
                best["step"] > self.step
                or best.get("metric") != self.best_metric
                or not (ckpt.step_dir(self.out, best["step"]) / ckpt.META).is_file()
            ):
                log.warning(
                    "%s names step %d (%s), which this resume at step %d does not keep: "
                    "taking the best remaining checkpoint from metrics.jsonl",
                    self.out / ckpt.BEST,
                    best["step"],
                    best.get("metric"),
                    self.step,
                )
                best = self._best_from_log()
                if best is not None:
                    ckpt.write_best(self.out, best)
                else:
                    (self.out / ckpt.BEST).unlink(missing_ok=True)
            rec = [best]
        dist.broadcast_object_list(rec, src=0)
        return rec[0]

    def _best_from_log(self) -> dict[str, Any] | None:
        """The lowest logged validation loss (up to the resumed step, ``metrics.jsonl`` is
        truncated there) among the steps whose checkpoint is still complete."""
        kept = set(ckpt.complete_steps(self.out))
        best = None
        path = self.out / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(r, dict) or r.get("kind") != "val":
                continue
            v, s = r.get(self.best_metric), r.get("step")
            if type(s) is not int or s not in kept or s > self.step:
                continue
            if isinstance(v, float) and v == v and (best is None or v < best["value"]):
                best = {
                    "step": s,
                    "metric": self.best_metric,
                    "value": v,
                    "checkpoint": ckpt.step_dir(".", s).as_posix(),
                }
        return best

    def _improves(self, res: dict[str, float]) -> bool:
        """Whether this validation's loss is the lowest so far (same answer on every rank)."""
        v = res.get(self.best_metric) if self.best_metric else None
        if v is None or v != v:
            return False
        return self.best is None or v < self.best["value"]

    def _universal_tag(self, d: Path, saved_world: int) -> str:
        """Rank 0 converts ``d/ds`` once; every rank learns whether it worked."""
        err: list[Any] = [None]
        if self.rank == 0:
            try:
                ckpt.to_universal(d, trust_unhashed=self.trust_unhashed)
            except ckpt.CheckpointError as exc:  # refused: the same error on every rank
                err = [("refused", str(exc))]
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                log.exception("converting %s to a universal checkpoint failed", d / "ds")
                err = [("failed", f"{type(exc).__name__}: {exc}")]
        dist.broadcast_object_list(err, src=0)
        if err[0] is not None and err[0][0] == "refused":
            raise ckpt.CheckpointError(err[0][1])
        if err[0] is None and self.rank != 0:
            ckpt.verify_universal(d)  # what this rank will load is what rank 0 wrote
        if err[0] is not None:
            raise RuntimeError(
                f"converting {d / 'ds'} to a DeepSpeed universal checkpoint failed on rank 0 "
                f"({err[0][1]}); resume with the {saved_world} ranks it was saved with instead"
            )
        return ckpt.UNIVERSAL

    def _restore_outside_optimizer(self, d: Path) -> None:
        """A universal checkpoint restores what the optimizer holds; module buffers (the RVQ's
        EMA statistics) and frozen weights come from ``model.safetensors``. Then the whole
        model must equal that file, or the resume stops."""
        from safetensors.torch import load_file

        saved = load_file(str(d / "model.safetensors"))
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                if name in saved:
                    buf.copy_(saved[name].to(buf.dtype))
            frozen = [(n, p) for n, p in self.model.named_parameters() if not p.requires_grad]
            for name, p in frozen:
                if self.cfg.zero_stage == 3:
                    with self.ds.zero.GatheredParameters([p], modifier_rank=0):
                        if self.rank == 0:
                            p.copy_(saved[name].to(p.dtype))
                else:
                    p.copy_(saved[name].to(p.dtype))
        state = self._full_state_dict()  # ZeRO-3: gathered on every rank, kept on rank 0
        bad = []
        if self.rank == 0:
            mine = {k: v.detach().float() if v.is_floating_point() else v for k, v in state.items()}
            bad = sorted(set(mine) ^ set(saved))
            bad += [k for k in sorted(set(mine) & set(saved)) if not torch.equal(mine[k], saved[k])]
        obj = [bad]
        dist.broadcast_object_list(obj, src=0)
        if obj[0]:
            raise RuntimeError(
                f"after loading the universal checkpoint of {d} the model differs from its "
                f"model.safetensors in {len(obj[0])} tensors: {obj[0][:8]}"
            )

    def save(self) -> Path:
        d = ckpt.step_dir(self.out, self.step)
        if self.rank == 0 and d.exists():  # an incomplete attempt (no meta.json): redo it
            import shutil

            shutil.rmtree(d)
        dist.barrier()
        self.engine.save_checkpoint(str(d), tag="ds", save_latest=False)
        ckpt.save_rank_files(d, self.rank, self.loader.state_dict())
        state = self._full_state_dict()
        if self.rank == 0:
            ckpt.save_model(d, state, self.model_json)
        dist.barrier()
        if self.rank == 0:
            ckpt.finish(
                d,
                {
                    "step": self.step,
                    "world": self.world,
                    "total_steps": self.total_steps,
                    "samples": self.step * self.cfg.global_batch,
                    "recipe": self.cfg.recipe,
                    "kind": self.cfg.kind,
                    "time": time.time(),
                },
                self.cfg.keep_last,
                keep=(self.best["step"],) if self.best else (),
            )
        dist.barrier()
        return d

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        if self.cfg.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return self.model.state_dict() if self.rank == 0 else {}
