"""Step-N checkpoints: DeepSpeed state, every rank's loader state and RNG states, and a
consolidated fp32 model. A checkpoint exists only once its ``meta.json`` is written (last,
by rank 0, after every rank has finished writing).

Layout::

    OUT/checkpoints/step-00000040/
        ds/                      DeepSpeed engine state (model, optimizer, scheduler)
        ds-universal/            the same as a DeepSpeed universal checkpoint: made by the
                                 first resume with another number of ranks (ZeRO 1-3)
        loader-00000.json        loader state of rank 0 (one per rank)
        rng-00000.pt             torch / python / CUDA RNG states of rank 0
        model.safetensors        fp32 weights of the whole model (rank 0)
        model.json               model kind and config (see :mod:`.export`)
        meta.json                step, samples, world size, the sha256 and size of every
                                 other file: written last (the commit marker)
        ds-universal.json        sha256 of every file of ds-universal/ (after a conversion)

ZeRO partitions the optimizer state (and under ZeRO-3 the weights) per rank, so ``ds/`` only
loads into as many ranks as wrote it. :func:`to_universal` rewrites it once with DeepSpeed's
``ds_to_universal`` into one file per parameter and state (``exp_avg``, ``exp_avg_sq``,
``fp32``, ``step``), which DeepSpeed loads into any number of ranks
(``"checkpoint": {"load_universal": true}``).

Checkpoints are data, never code (they live on shared object storage, see README "Security
and threat model"): :func:`verify` checks every file against the sha256 in ``meta.json`` and
refuses unlisted files, symlinks and pickles that name any global outside torch's
``weights_only`` set plus :data:`DS_SAFE_GLOBALS`, before anything is loaded (resume,
universal conversion, export). DeepSpeed's own ``torch.load`` calls, which turn
``weights_only`` off (its checkpoint engine, ZeRO optimizers, ``ds_to_universal``), then run
inside
:func:`weights_only_loads`, which forces ``weights_only=True`` with that allowlist, so even a
pickle that passed the hash check (an attacker who also rewrote ``meta.json``) cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ..io.commit import atomic_write_bytes, move_into, staged_path

log = logging.getLogger(__name__)

META = "meta.json"
UNIVERSAL = "ds-universal"  # tag of the universal form of ``ds/``
UNIVERSAL_META = "ds-universal.json"  # hashes of ``ds-universal/``, written after it
FORMAT = "brainomni.checkpoint/2"  # /2: meta.json lists every file's sha256
_STEP = re.compile(r"^step-(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_META_BYTES = 64 << 20  # meta.json is read whole; a real one is a few kB per 100 files
MAX_PICKLE_BYTES = 256 << 20  # a DeepSpeed data.pkl holds names, shapes and scalars (kB-MB)
_FORCE_WO, _FORCE_NO_WO = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, changed since it was written or not plain data."""


def _ds_safe_globals() -> list[Any]:
    """The classes DeepSpeed 0.19's checkpoint files pickle besides tensors and builtins
    (found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on ZeRO 0-3 and
    universal checkpoints): plain records with no code run on load."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # DynamicLossScaler: fp16 runs (not used by the recipes, which train fp32 / bf16)
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def __getattr__(name: str) -> Any:  # DS_SAFE_GLOBALS imports DeepSpeed on first use only
    if name == "DS_SAFE_GLOBALS":
        return _ds_safe_globals()
    raise AttributeError(name)


@contextlib.contextmanager
def weights_only_loads(what: str | Path = "a checkpoint") -> Iterator[None]:
    """Every ``torch.load`` in this process, DeepSpeed's included, loads ``weights_only``
    with :data:`DS_SAFE_GLOBALS` allowed, whatever ``weights_only=`` the caller passed.

    torch's own switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (read on every call) does the
    forcing: it also covers code holding its own reference to ``torch.load``, and child
    processes inherit it (not the allowlist: they fail closed; :func:`to_universal` runs
    ``ds_to_universal`` with one worker, in process). Not thread-safe against other threads
    that need arbitrary unpickling at the same time (the trainer has none). An object
    outside the allowlist raises :class:`CheckpointError` naming ``what``."""
    saved = {k: os.environ.get(k) for k in (_FORCE_WO, _FORCE_NO_WO)}
    os.environ[_FORCE_WO] = "1"
    os.environ.pop(_FORCE_NO_WO, None)
    try:
        with torch.serialization.safe_globals(_ds_safe_globals()):
            yield
    except pickle.UnpicklingError as exc:
        lines = str(exc).splitlines()
        why = next((x.strip() for x in lines if "GLOBAL" in x), lines[0] if lines else "")
        raise CheckpointError(
            f"a file of {what} holds objects that are not plain data: refused, nothing of it "
            f"was run ({why}). Delete {what} and resume from another checkpoint"
        ) from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def step_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:08d}"


def complete_steps(out: str | Path) -> list[int]:
    """Steps whose checkpoint is complete (has its metadata file), ascending."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        m = _STEP.match(p.name)
        if m and (p / META).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest(out: str | Path) -> Path | None:
    steps = complete_steps(out)
    return step_dir(out, steps[-1]) if steps else None


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(str(path), json.dumps(obj, sort_keys=True, indent=1).encode())


def save_rank_files(d: Path, rank: int, loader_state: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / f"loader-{rank:05d}.json", loader_state)
    torch.save(rng_state(), d / f"rng-{rank:05d}.pt")


def load_rank_files(d: Path, rank: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every rank's loader state (sorted by rank) and this rank's RNG state (None when the
    saved run had fewer ranks)."""
    loaders = [json.loads(p.read_text()) for p in sorted(d.glob("loader-*.json"))]
    rng_path = d / f"rng-{rank:05d}.pt"
    rng = torch.load(rng_path, weights_only=True) if rng_path.exists() else None
    return loaders, rng


# --------------------------------------------------------------------------- integrity


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _listed(d: Path, under: str | None) -> list[str]:
    """Relative POSIX paths of the files a manifest covers: everything under ``d/under``,
    or (``under=None``) everything in ``d`` except ``meta.json``, the universal form and
    the dot-named temporaries of atomic writes at the top level."""
    root = d / under if under else d
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(d)
        if under is None and rel_dir == Path("."):
            dirnames[:] = [n for n in dirnames if n != UNIVERSAL and not n.startswith(".")]
            filenames = [
                n for n in filenames if n not in (META, UNIVERSAL_META) and not n.startswith(".")
            ]
        for n in dirnames:
            if (Path(dirpath) / n).is_symlink():
                raise CheckpointError(f"{Path(dirpath) / n} is a symlink: a checkpoint holds none")
        out += [(rel_dir / n).as_posix() for n in filenames]
    return sorted(out)


def file_table(d: Path, under: str | None = None) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` of the files :func:`_listed` covers."""
    table = {}
    for rel in _listed(d, under):
        p = d / rel
        if p.is_symlink() or not p.is_file():
            raise CheckpointError(f"{p} is not a regular file: a checkpoint holds none")
        table[rel] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return table


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise CheckpointError(
                f"{path} is {size} bytes: not a {what} (at most {MAX_META_BYTES})"
            )
        obj = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable {what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a {what} (a JSON object)")
    return obj


def _check_table(d: Path, table: Any, source: Path, under: str | None) -> None:
    """Every listed file present with its size and sha256, and nothing else."""
    if not isinstance(table, dict):
        raise CheckpointError(f"{source}: 'files' is not an object")
    for rel, entry in table.items():
        pp = PurePosixPath(rel) if isinstance(rel, str) else None
        ok_path = (
            pp is not None
            and rel == pp.as_posix()
            and not pp.is_absolute()
            and ".." not in pp.parts
            and "\\" not in rel
            and (under is None or pp.parts[0] == under)
        )
        ok_entry = (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.match(entry["sha256"]) is not None
            and type(entry.get("bytes")) is int
        )
        if not (ok_path and ok_entry):
            raise CheckpointError(f"{source}: invalid file entry {rel!r}: {entry!r}")
    present = _listed(d, under)
    extra = sorted(set(present) - set(table))
    if extra:
        raise CheckpointError(
            f"{d}: files not recorded in {source.name} (added after the checkpoint was "
            f"written; DeepSpeed would load them): {extra[:8]}. Remove them, or delete "
            f"{d} to resume from an earlier checkpoint"
        )
    for rel, entry in sorted(table.items()):
        p = d / rel
        if p.is_symlink() or not p.is_file():
            raise CheckpointError(
                f"{p} is recorded in {source.name} but is missing or not a regular file: "
                f"restore it or delete {d} to resume from an earlier checkpoint"
            )
        size = p.stat().st_size
        sha = file_sha256(p) if size == entry["bytes"] else None
        if sha != entry["sha256"]:
            raise CheckpointError(
                f"{p} changed after the checkpoint was written ({size} bytes, sha256 "
                f"{sha or 'not computed'}; {source.name} records {entry['bytes']} bytes, "
                f"{entry['sha256']}): refused before loading anything. Restore the file "
                f"or delete {d} to resume from an earlier checkpoint"
            )


def scan_pickles(d: Path, rels: list[str]) -> None:
    """Refuse any ``.pt`` among ``rels`` whose pickle names a global outside torch's
    ``weights_only`` set and :data:`DS_SAFE_GLOBALS` (a static disassembly by torch's
    ``get_unsafe_globals_in_checkpoint``: nothing is unpickled). The first line of defence;
    :func:`weights_only_loads` is the second."""
    for rel in rels:
        if not rel.endswith(".pt"):
            continue
        p = d / rel
        try:
            with zipfile.ZipFile(p) as z:
                pkls = [i for i in z.infolist() if i.filename.split("/")[-1] == "data.pkl"]
                if len(pkls) != 1 or pkls[0].file_size > MAX_PICKLE_BYTES:
                    raise CheckpointError(
                        f"{p} is not a torch.save file of plain tensors ({len(pkls)} pickles, "
                        f"{sum(i.file_size for i in pkls)} bytes)"
                    )
            with torch.serialization.safe_globals(_ds_safe_globals()):
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(p))
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure of hostile bytes
            raise CheckpointError(f"{p} is not a readable torch.save file: {exc!r}") from exc
        if unsafe:
            raise CheckpointError(
                f"{p} pickles {sorted(unsafe)[:8]}, which are not plain data (a checkpoint "
                f"file must never run code on load): refused, nothing of it was loaded. "
                f"Delete {p.parent if p.parent.name in ('ds', UNIVERSAL) else p} "
                f"and resume from another checkpoint"
            )


def verify(d: Path, *, trust_unhashed: bool = False) -> dict[str, Any]:
    """``meta.json`` of the checkpoint ``d`` once every file is what it recorded (sha256 and
    size, no unlisted files, no symlinks) and every pickle is plain data; raises
    :class:`CheckpointError` naming the file otherwise.

    A checkpoint written before hashes were recorded (no ``files`` in ``meta.json``) is
    refused unless ``trust_unhashed`` (``--trust-unhashed``); its pickles are still
    scanned and still load ``weights_only``."""
    meta_path = d / META
    meta = _read_json(meta_path, "checkpoint meta.json")
    for key in ("step", "world"):
        v = meta.get(key)
        if type(v) is not int or v < (0 if key == "step" else 1):
            raise CheckpointError(f"{meta_path}: {key!r} is {v!r}, not a valid count")
    if "files" in meta:
        _check_table(d, meta["files"], meta_path, None)
        rels = sorted(meta["files"])
    elif trust_unhashed:
        log.warning(
            "%s records no file hashes (written by an older brainomni): loading it unverified "
            "because of --trust-unhashed (its pickles still load weights_only)",
            meta_path,
        )
        rels = _listed(d, None)
    else:
        raise CheckpointError(
            f"{meta_path} records no file hashes (written before brainomni recorded them, or "
            f"stripped): refused. If you trust where it comes from, pass --trust-unhashed "
            f"(pickles still load weights_only only)"
        )
    scan_pickles(d, rels)
    return meta


def finish(d: Path, meta: dict[str, Any], keep_last: int, keep: tuple[int, ...] = ()) -> None:
    """Rank 0, after a barrier: record every file's sha256, write the marker, then prune
    older complete checkpoints (except the steps in ``keep``: the best checkpoint)."""
    write_json(d / META, {**meta, "format": FORMAT, "files": file_table(d)})
    out = d.parent.parent
    steps = complete_steps(out)
    for s in steps[:-keep_last] if keep_last > 0 else []:
        if s not in keep:
            shutil.rmtree(step_dir(out, s), ignore_errors=True)
    log.info("checkpoint %s complete", d)


# --------------------------------------------------------------------------- best checkpoint

BEST = "best.json"  # OUT/best.json: the step whose validation loss is the lowest so far


def write_best(out: str | Path, record: dict[str, Any]) -> None:
    """Rank 0: ``OUT/best.json`` (atomic), written once that step's checkpoint is complete."""
    write_json(Path(out) / BEST, record)


def read_best(out: str | Path) -> dict[str, Any] | None:
    """``OUT/best.json`` checked (a step count, a finite value, a metric name), or None when
    the run has none. A record that is not one raises :class:`CheckpointError` naming it;
    the checkpoint it names is not checked here (see :func:`best_dir`)."""
    p = Path(out) / BEST
    if not p.exists():
        return None
    rec = _read_json(p, "best-checkpoint record")
    step, value, metric = rec.get("step"), rec.get("value"), rec.get("metric")
    ok = (
        type(step) is int
        and step >= 0
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
        and isinstance(metric, str)
    )
    if not ok:
        raise CheckpointError(
            f"{p} is not a best-checkpoint record (step {step!r}, value {value!r}, metric "
            f"{metric!r}): delete it (the next validation writes a new one) or export a step "
            f"folder instead"
        )
    return rec


def best_dir(out: str | Path) -> Path:
    """The complete checkpoint ``OUT/best.json`` names; :class:`CheckpointError` (saying
    what to do) when the run records none or it is gone. Only the step number is taken from
    the record: the folder is always ``OUT/checkpoints/step-N``."""
    rec = read_best(out)
    if rec is None:
        raise CheckpointError(
            f"{out} records no best checkpoint ({Path(out) / BEST} is missing: the run never "
            f"validated, or was written by an older brainomni); export the latest checkpoint "
            f"(without --best) or a step folder"
        )
    d = step_dir(out, rec["step"])
    if not (d / META).is_file():
        raise CheckpointError(
            f"{Path(out) / BEST} names step {rec['step']}, but {d} is not a complete "
            f"checkpoint (deleted?): export another step folder"
        )
    return d


def save_model(d: Path, state: dict[str, torch.Tensor], model_json: dict[str, Any]) -> None:
    """fp32 safetensors of ``state`` plus ``model.json`` (rank 0)."""
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in state.items()
    }
    with staged_path(d / "model.safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    write_json(d / "model.json", model_json)


def verify_universal(d: Path) -> None:
    """``d/ds-universal`` is what :func:`to_universal` wrote (``ds-universal.json``) and
    plain data; raises :class:`CheckpointError` otherwise."""
    src = d / UNIVERSAL_META
    table = _read_json(src, "universal checkpoint record").get("files")
    _check_table(d, table, src, UNIVERSAL)
    scan_pickles(d, sorted(table))


def to_universal(d: Path, *, trust_unhashed: bool = False) -> Path:
    """``d/ds`` as a DeepSpeed universal checkpoint ``d/ds-universal`` (rank 0 only).

    ``d`` is verified first (:func:`verify`) and the conversion runs inside
    :func:`weights_only_loads`. Converted once with DeepSpeed's ``ds_to_universal`` (in this
    process, one worker: no process pool inside a training rank) into a temporary folder
    that is renamed when complete; ``ds-universal.json`` (its files' sha256) is written
    after it, and an existing ``ds-universal`` is reused only when it matches that record
    (otherwise it is converted again). Its console output goes to the debug log.
    """
    verify(d, trust_unhashed=trust_unhashed)
    out = d / UNIVERSAL
    if out.is_dir():
        try:
            verify_universal(d)
            return out
        except CheckpointError as exc:
            log.warning("%s is not the recorded conversion (%s): converting again", out, exc)
            (d / UNIVERSAL_META).unlink(missing_ok=True)
            shutil.rmtree(out)
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tmp = d / f".{UNIVERSAL}.tmp"  # the converter also writes a latest_universal beside it
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(d / "ds"),
        output_folder=str(tmp / UNIVERSAL),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # no Megatron-style UNIVERSAL_CHECKPOINT_INFO in ours
    )
    buf = io.StringIO()
    try:
        with (
            weights_only_loads(d / "ds"),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            ds_to_universal(args)
        move_into([tmp / UNIVERSAL], d)  # onto d / UNIVERSAL (removed above)
        write_json(d / UNIVERSAL_META, {"format": FORMAT, "files": file_table(d, UNIVERSAL)})
    finally:
        log.debug("ds_to_universal %s:\n%s", d, buf.getvalue())
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to a universal checkpoint", d / "ds")
    return out
