"""Pretraining loop for both stages under DeepSpeed ZeRO (1, 2 or 3; optional CPU offload).

One process per device, launched by ``torchrun`` or the ``deepspeed`` launcher (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Each optimizer step takes
``grad_accum`` micro-batches from every rank's :class:`~brainomni.loader.ShardLoader` so that
micro x world x accum is the recipe's global batch. bf16 autocast on CUDA, fp32 on CPU. The
RVQ's EMA statistics are all-reduced across ranks by the quantiser itself (``sync_codebook``).

The class is assembled from one room per job: the loop and forward here, saving and
resuming a run in :mod:`.resume` (:class:`~.resume.Checkpointing`), validation in
:mod:`.validation` (:class:`~.validation.Validation`). Code outside the library (tests,
notebooks) hooks into the loop through ``callbacks``: each is called with the trainer after
every optimizer step, once that step's logging, validation and checkpoint are done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
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
from .optim import deepspeed_config, param_groups
from .resume import Checkpointing
from .validation import Validation

log = logging.getLogger(__name__)


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


class Trainer(Checkpointing, Validation):
    """One rank of a run into ``out``; ``resume=True`` continues from its latest complete
    checkpoint (saved with any number of ranks). ``callbacks``: called as ``cb(trainer)``
    after every optimizer step, once its logging, validation and checkpoint are done (e.g.
    to stop a run or record something); they run on every rank."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: str | Path,
        *,
        resume: bool = False,
        trust_unhashed: bool = False,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
    ) -> None:
        self.callbacks = list(callbacks)
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
                if "x" in batch and (cfg.data.train_channels or cfg.data.train_crop):
                    batch = subsample(
                        batch,
                        cfg.data.train_channels,
                        cfg.data.train_crop,
                        # a function of the step, so a resumed run draws the same subsets
                        seed=(cfg.seed, self.rank, self.step, len(keys)),
                    )
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
            for cb in self.callbacks:
                cb(self)
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


def subsample(
    batch: dict[str, Any], channels: int, crop: int, *, seed: tuple[int, ...]
) -> dict[str, Any]:
    """A training batch with at most ``channels`` random real channels per recording and a
    random ``crop``-sample stretch (``0``: keep all); ``mask`` marks the kept channels."""
    x, pos, st = batch["x"], batch["pos"], batch["sensor_type"]
    B, C, T = x.shape
    mask = batch.get("mask")
    if mask is None or not batch.get("padded", True):
        mask = torch.ones(B, C, dtype=torch.bool)
    digest = hashlib.sha256(repr(seed).encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
    out = dict(batch)
    if crop and crop < T:
        t0 = int(torch.randint(0, T - crop + 1, (1,), generator=g))
        x = x[..., t0 : t0 + crop]
    if channels and channels < C:
        picks = []
        for b in range(B):
            real = mask[b].nonzero().flatten()
            keep = real[torch.randperm(len(real), generator=g)[:channels]]
            picks.append(keep.sort().values)
        K = max(len(p) for p in picks)
        new_mask = torch.zeros(B, K, dtype=torch.bool)
        idx = torch.zeros(B, K, dtype=torch.long)
        for b, p in enumerate(picks):
            idx[b, : len(p)], new_mask[b, : len(p)] = p, True
        rows = torch.arange(B)[:, None]
        x, pos, st, mask = x[rows, idx], pos[rows, idx], st[rows, idx], new_mask
        out["padded"] = not bool(mask.all())
    out.update(x=x, pos=pos, sensor_type=st, mask=mask)
    return out


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
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    trust_unhashed: bool = False,
    callbacks: Sequence[Callable[[Trainer], None]] = (),
) -> dict[str, Any]:
    """Run (or continue, with ``resume``) a pretraining run into ``out``; ``callbacks`` as
    for :class:`Trainer`."""
    return Trainer(
        cfg, out, resume=resume, trust_unhashed=trust_unhashed, callbacks=callbacks
    ).train()
