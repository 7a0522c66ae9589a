"""Pretraining loop for both stages under DeepSpeed ZeRO (1, 2 or 3; optional CPU offload).

One process per device, launched by ``torchrun`` or the ``deepspeed`` launcher (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Each optimizer step takes
``grad_accum`` micro-batches from every rank's :class:`~brainomni.loader.ShardLoader` so that
micro x world x accum is the recipe's global batch. bf16 autocast on CUDA, fp32 on CPU. The
RVQ's EMA statistics are all-reduced across ranks by the quantiser itself (``sync_codebook``).

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
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..loader.loader import ShardLoader, read_manifest
from ..loader.reader import ReadConfig
from . import checkpoint as ckpt
from .config import TrainConfig
from .export import file_sha256, load_export, model_json
from .logs import MetricsLog, truncate_logs
from .metrics import (
    plot_reconstruction,
    reconstruction_example,
    tokenizer_report,
    tokenizer_sums,
)
from .optim import deepspeed_config, param_groups

log = logging.getLogger(__name__)

KILL_ENV = "BRAINOMNI_TEST_KILL_AFTER_STEP"  # tests: SIGKILL rank 0 after this step


def _import_deepspeed():
    try:
        import deepspeed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pretraining needs DeepSpeed: DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 "
            "pip install --no-build-isolation deepspeed==0.19.8"
        ) from exc
    return deepspeed


# --------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to train and extra fields for its ``model.json``."""
    from brainomni.models import BrainOmni, BrainTokenizer

    if cfg.kind == "tokenizer":
        return BrainTokenizer(**cfg.model), {}
    if not cfg.tokenizer:
        raise ValueError("omni pretraining needs tokenizer=EXPORT_DIR (from `brainomni export`)")
    tok = load_export(cfg.tokenizer)
    if not hasattr(tok, "quantizer"):
        raise ValueError(f"{cfg.tokenizer} is not an exported tokenizer")
    sha = file_sha256(Path(cfg.tokenizer) / "model.safetensors")
    return BrainOmni(cfg.size, tokenizer=tok, **cfg.model), {"tokenizer_sha256": sha}


# --------------------------------------------------------------------------- trainer


class Trainer:
    """One rank of a run into ``out``; ``resume=True`` continues from its latest complete
    checkpoint (saved with any number of ranks)."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: str | Path,
        *,
        resume: bool = False,
        trust_unhashed: bool = False,
    ) -> None:
        deepspeed = _import_deepspeed()
        self.ds = deepspeed
        self.cfg, self.out = cfg, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if self.cuda else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.cuda else "cpu"
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank

        d = cfg.data
        self.manifest = read_manifest(d.manifest)
        self.read_config = ReadConfig(verify_sha256=d.verify_sha256, attempts=d.read_attempts)
        self.loader = self._loader(d.train_split, shuffle=True)
        self.accum = cfg.grad_accum(self.world)
        self.total_steps = cfg.total_steps(self.loader.samples_per_epoch)

        model, extra = build_model(cfg)
        _check_data(cfg, self.manifest, extra)
        self.model_json = model_json(model, cfg.kind, **extra)
        # a checkpoint of another world size loads as a universal checkpoint, which the
        # engine has to know when it is built
        self.universal = False
        self.trust_unhashed = trust_unhashed
        self._resume_from: tuple[Path, dict[str, Any]] | None = None
        if resume and (d := ckpt.latest(self.out)) is not None:
            # every file against meta.json's sha256, every pickle plain data: before anything
            # of the checkpoint is used (each rank checks what it will read)
            meta = ckpt.verify(d, trust_unhashed=trust_unhashed)
            self._resume_from = (d, meta)
            self.universal = meta["world"] != self.world and cfg.zero_stage > 0
        ds_cfg = deepspeed_config(cfg, self.world, self.total_steps, load_universal=self.universal)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, cfg.optim.weight_decay),
            config=ds_cfg,
        )
        self.model = self.engine.module
        torch.manual_seed(cfg.seed + self.rank)  # corruption noise and masks differ per rank
        if cfg.kind == "omni" and cfg.zero_stage == 3:
            # used by BrainOmni outside its owner's forward (source identity embedding)
            deepspeed.zero.register_external_parameter(
                self.model, self.model.tokenizer.encoder.neuros
            )
        self.step = 0
        # the best validation checkpoint so far (OUT/best.json): by the validation loss of
        # the first val split, which every rank gets after the all-reduce
        vs = cfg.data.val_splits
        self.best_metric = f"{vs[0]}/loss" if vs else None
        self.best: dict[str, Any] | None = None
        if self.rank == 0:
            (self.out / "config.json").write_text(
                json.dumps(
                    {"train": cfg.to_dict(), "deepspeed": ds_cfg, "world": self.world},
                    indent=1,
                    sort_keys=True,
                )
            )
        self.resumed_from: Path | None = None
        if resume:
            self.resume()
            if self.rank == 0:
                # the steps after the checkpoint are redone: drop their records (no duplicates)
                truncate_logs(self.out, self.step)
            self.best = self._resume_best()
            dist.barrier()  # before any rank appends to its samples log again
        self.log = MetricsLog(self.out, self.rank == 0, purge_after=self.step if resume else None)

    def _loader(self, split: str, *, shuffle: bool) -> ShardLoader:
        d = self.cfg.data
        return ShardLoader(
            self.manifest,
            split,
            rank=self.rank,
            world=self.world,
            micro_batch=d.micro_batch,
            workers=d.workers if shuffle else 0,
            seed=self.cfg.seed,
            chunk=d.chunk,
            shuffle=shuffle,
            bucket=d.bucket,
            max_epochs=None if shuffle else 1,
            shards_root=d.shards_root,
            read_config=self.read_config,
        )

    # ------------------------------------------------------------------ forward
    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "indices" in batch:
            return {"indices": batch["indices"].to(self.device, non_blocking=True)}
        out = {
            k: batch[k].to(self.device, non_blocking=True)
            for k in ("x", "pos", "sensor_type", "mask")
        }
        out["x"] = out["x"].float()  # shards store float16
        if not batch.get("padded", True):
            out["mask"] = None
        return out

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if "x" in out:
            out["x"] = out["x"].float()
        return out

    def _forward(self, batch: dict[str, Any], **kw: Any) -> dict[str, torch.Tensor]:
        inp = self._inputs(batch)
        with self._autocast():
            if "indices" in inp:
                return self.engine(indices=inp["indices"], **kw)
            return self.engine(inp["x"], inp["pos"], inp["sensor_type"], inp["mask"], **kw)

    # ------------------------------------------------------------------ resume
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

    # ------------------------------------------------------------------ validation
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

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        it = iter(self.loader)
        bar = None
        if self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(
                total=self.total_steps,
                initial=self.step,
                unit="step",
                dynamic_ncols=True,
                disable=not sys.stderr.isatty(),
            )
        sample_log = None
        if cfg.log_samples:
            sample_log = open(self.out / f"samples-{self.rank:05d}.jsonl", "a", buffering=1)  # noqa: SIM115
        kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
        t0, seen0 = time.time(), 0
        last: dict[str, float] = {}
        self.engine.train()
        while self.step < self.total_steps:
            acc: dict[str, float] = {}
            keys = []
            # the LR this step's update uses (the scheduler moves on inside engine.step())
            lr = float(self.engine.get_lr()[0])
            for _ in range(self.accum):
                batch = next(it)
                out = self._forward(batch)
                self.engine.backward(out["loss"])
                self.engine.step()
                for k, v in out.items():
                    acc[k] = acc.get(k, 0.0) + float(v.detach()) / self.accum
                keys.append(batch["keys"])
            self.step += 1
            seen0 += cfg.global_batch
            vals = torch.tensor(list(acc.values()), dtype=torch.float64)
            dist.all_reduce(vals)
            last = {k: float(v) / self.world for k, v in zip(acc, vals, strict=True)}
            last["lr"] = lr
            if sample_log is not None:
                sample_log.write(json.dumps({"step": self.step, "keys": keys}) + "\n")
            if self.rank == 0:
                rate = seen0 / max(time.time() - t0, 1e-9)
                last["samples_per_s"] = rate
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    self.log.write(self.step, last)
                    eta = (self.total_steps - self.step) * cfg.global_batch / max(rate, 1e-9)
                    log.info(
                        "step %d/%d loss %.4f lr %.2e %.1f samples/s eta %.0fs",
                        self.step,
                        self.total_steps,
                        last["loss"],
                        last["lr"],
                        rate,
                        eta,
                    )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", sps=f"{rate:.1f}")
            save_now = self.step % cfg.ckpt_every == 0 or self.step == self.total_steps
            improved = False
            if self.step % cfg.val_every == 0 or self.step == self.total_steps:
                res = self.validate()
                # candidates: validations whose step is saved (all of them when ckpt_every
                # divides val_every); no extra checkpoints, so resumes see the usual steps
                improved = save_now and self._improves(res)
                if self.rank == 0:
                    self.log.write(self.step, res, kind="val")
                    log.info("validation step %d: %s", self.step, _short(res))
            if save_now:  # keeps the recorded best from pruning
                self.save()
            if improved:
                self.best = {
                    "step": self.step,
                    "metric": self.best_metric,
                    "value": res[self.best_metric],
                    "checkpoint": ckpt.step_dir(".", self.step).as_posix(),
                }
                if self.rank == 0:
                    ckpt.write_best(self.out, self.best)
                    log.info(
                        "best %s %.5g at step %d", self.best_metric, self.best["value"], self.step
                    )
            if kill_at and self.step == kill_at and self.rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)
        st = self.loader.stats()
        if st.get("shards_skipped"):
            log.warning(
                "rank %d skipped %d shards (%d samples): %s",
                self.rank,
                st["shards_skipped"],
                st["samples_skipped"],
                st["skipped"],
            )
        if self.rank == 0:
            self.log.write(
                self.step, {k: v for k, v in st.items() if not isinstance(v, list)}, kind="loader"
            )
        if bar is not None:
            bar.close()
        if sample_log is not None:
            sample_log.close()
        self.log.close()
        return {"step": self.step, "last": last, "loader": st}


def _check_data(cfg: TrainConfig, manifest: dict[str, Any], extra: dict[str, Any]) -> None:
    """The manifest must match the stage and, for token shards, the tokenizer."""
    tokens = manifest["format"].startswith("brainomni.token-manifest")
    if cfg.kind == "tokenizer" and tokens:
        raise ValueError("the tokenizer trains on signal shards, not on a token manifest")
    if cfg.kind == "omni":
        if (cfg.data.source == "tokens") != tokens:
            raise ValueError(
                f"data.source={cfg.data.source!r} but the manifest is a "
                f"{'token' if tokens else 'signal'} manifest"
            )
        if tokens and manifest["tokenizer"]["sha256"] != extra["tokenizer_sha256"]:
            raise ValueError(
                "the token shards were made by another tokenizer (sha256 "
                f"{manifest['tokenizer']['sha256'][:12]} != {extra['tokenizer_sha256'][:12]})"
            )


def _short(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in list(d.items())[:12])


def pretrain(
    cfg: TrainConfig, out: str | Path, *, resume: bool = False, trust_unhashed: bool = False
) -> dict[str, Any]:
    """Run (or continue, with ``resume``) a pretraining run into ``out``."""
    return Trainer(cfg, out, resume=resume, trust_unhashed=trust_unhashed).train()
