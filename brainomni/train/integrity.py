"""What a checkpoint is checked against before anything of it is used (split from
:mod:`.checkpoint`, which re-exports these names).

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

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch

log = logging.getLogger(__name__)

META = "meta.json"
UNIVERSAL = "ds-universal"  # tag of the universal form of ``ds/``
UNIVERSAL_META = "ds-universal.json"  # hashes of ``ds-universal/``, written after it
FORMAT = "brainomni.checkpoint/2"  # /2: meta.json lists every file's sha256
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
