"""Helpers of the pretraining tests: torchrun on this machine, the run's logs, and a
killed run.

``python -m torch.distributed.run ... tests/train/pretrain_run.py STEP MANIFEST SHARDS_ROOT
OUT [key=value ...]`` trains the ``cpu-test-tokenizer`` recipe, configured as ``brainomni
pretrain tokenizer`` does (recipe, then ``data.manifest``/``data.shards_root``, then the
overrides), and SIGKILLs rank 0 after step ``STEP`` as a preempted job would. The kill is
injected through the trainer's public ``callbacks`` (:func:`kill_after`); the library has no
test hook.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "cpu-test-tokenizer"


def kill_after(step: int):
    """A trainer callback: SIGKILL rank 0 once ``step`` is done (its checkpoint, if any,
    written), leaving the run as a killed job leaves it."""

    def cb(trainer) -> None:
        if trainer.step == step and trainer.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return cb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int = 2, *, entry: tuple[str, ...] = ("-m", "brainomni")) -> list[str]:
    """torchrun on this machine; ``entry``: what each rank runs (module or script)."""
    port = free_port()
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        *entry,
    ]


def run(
    args: list[str],
    env: dict | None = None,
    ok: bool = True,
    nproc: int = 2,
    entry: tuple[str, ...] = ("-m", "brainomni"),
) -> subprocess.CompletedProcess:
    """``args`` under torchrun with ``nproc`` ranks (``nproc=1``: one process without a
    launcher, as ``brainomni pretrain`` runs on one device; no torchrun to start); raises with
    the logs unless it succeeds (``ok=False``: returns whatever happened)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)  # a launcher's variables of this process are not the child's
    cmd = [sys.executable, *entry] if nproc == 1 else torchrun(nproc, entry=entry)
    p = subprocess.run(
        cmd + args,
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok and p.returncode != 0:
        raise AssertionError(f"{args}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def records(out: Path, kind: str) -> dict[int, dict]:
    """Last record per step (a resumed run re-logs the steps after its checkpoint)."""
    recs = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == kind:
            r.pop("samples_per_s", None)
            recs[r["step"]] = r
    return recs


def samples(out: Path, rank: int) -> dict[int, list]:
    """Keys of every micro-batch per step (last record per step, as for :func:`records`)."""
    recs = {}
    for line in (out / f"samples-{rank:05d}.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["step"]] = r["keys"]
    return recs


# training batches of 16 random real channels x 2 s (the recordings have up to 366 channels
# x 10 s): 3x cheaper steps, for runs not compared across numbers of ranks (the draws are a
# function of the rank: a 1-rank resume of a 2-rank run draws other subsets)
CHEAP_STEPS = ["data.train_channels=16", "data.train_crop=512"]
# the tokenizer runs the tests share: 8 steps, checkpoints at 3 and 6, validation at 4 and 8
TOK_ARGS = ["max_steps=8", "ckpt_every=3", "val_every=4", "log_samples=true"]


def tok(s3_data, out: Path, *extra: str, env=None, ok=True, nproc=2):
    """``brainomni pretrain tokenizer`` on the shared tokenizer shards; ``extra``: key=value
    overrides and options."""
    m, root = s3_data["tokenizer-10s"]
    sets = [a for a in extra if "=" in a]
    opts = [a for a in extra if "=" not in a]
    return run(
        [
            "pretrain",
            "tokenizer",
            *sets,
            "--manifest",
            str(m),
            "--out",
            str(out),
            "--recipe",
            RECIPE,
            "--shards-root",
            root,
            *opts,
        ],
        env=env,
        ok=ok,
        nproc=nproc,
    )


def killed_tok(s3_data, out: Path, step: int, *overrides: str) -> subprocess.CompletedProcess:
    """:func:`tok`'s 2-rank run, with rank 0 SIGKILLed after ``step`` (this file under
    torchrun)."""
    m, root = s3_data["tokenizer-10s"]
    args = [str(step), str(m), root, str(out), *overrides]
    return run(args, ok=False, entry=(str(Path(__file__)),))


def _main(argv: list[str]) -> None:
    from brainomni.train.config import apply_overrides, get_recipe
    from brainomni.train.trainer import pretrain

    step, manifest, root, out, *overrides = argv
    sets = [f"data.manifest={json.dumps(manifest)}", f"data.shards_root={json.dumps(root)}"]
    cfg = apply_overrides(get_recipe(RECIPE), sets + overrides)
    pretrain(cfg, out, callbacks=[kill_after(int(step))])


if __name__ == "__main__":
    _main(sys.argv[1:])
