"""Versioned dataset manifests: build and publish (immutable); :mod:`.verify` checks every
shard of a published one, :mod:`.diff` compares two versions.

A published manifest is one JSON document at ``OUT/<name>/<version>/manifest.json``, beside
its dataset card (``card.md`` and PNG plots), of either kind (:mod:`brainomni.formats.manifest`:
the format, the content hash and the reader): a pack's signal shards (built from its
``index.json``) or a tokenize run's token shards (its ``manifest.json``, named and versioned
here). Both are staged in a run-specific hidden folder; the manifest is then claimed with
:func:`brainomni.io.commit.claim` (exclusive: a version exists only once it is there,
``publish`` refuses to write a version that already exists, and of two concurrent publishes
only the winner moves its card in).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..formats.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TOKEN_MANIFEST_FORMAT,
    content_hash,
    manifest_bytes,
    read_manifest,
)
from ..io.commit import claim, move_into
from ..io.fs import get_fs, join_url
from ..io.redact import redact
from ..io.retry import retry
from ..pack.run import INDEX_NAME, PACK_FORMAT
from ..splits import Assignment, SplitConfig, check_leakage
from .catalog import Catalog, load_datasets

log = logging.getLogger(__name__)

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ManifestExists(FileExistsError):
    """A published version is immutable."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _read_bytes(url: str, storage_options: dict | None) -> bytes:
    fs, path = get_fs(url, storage_options)
    fs.invalidate_cache(path)
    return retry(lambda: fs.cat_file(path), what=f"read {url}")


def build_manifest(
    shards_url: str,
    name: str,
    version: str,
    *,
    catalog: Catalog | None = None,
    downstream_subjects: list[tuple[str, str]] = (),
    storage_options: dict | None = None,
) -> dict[str, Any]:
    """The manifest of the finished pack at ``shards_url`` (runs the leakage check), or of
    the finished tokenize run there (its ``manifest.json``: :func:`build_token_manifest`)."""
    if not _NAME.match(name):
        raise ValueError(f"manifest name {name!r}: use lower-case letters, digits, . _ -")
    if not _SEMVER.match(version):
        raise ValueError(f"manifest version {version!r} is not a semantic version X.Y.Z")
    try:
        raw = _read_bytes(join_url(shards_url, INDEX_NAME), storage_options)
    except FileNotFoundError:
        return build_token_manifest(shards_url, name, version, storage_options=storage_options)
    catalog = catalog or load_datasets()
    index = json.loads(raw)
    if index.get("format") != PACK_FORMAT:
        raise ValueError(f"{redact(shards_url)}/{INDEX_NAME} is not a pack index")
    window_s = float(index["pack_config"]["window_s"])

    # Leakage: what the shards hold, and what the plan says, under both the pack's split
    # config and the catalog's current lists.
    assignments = [
        Assignment(r["split"], r["dataset"], r["subject"] or r["recording_id"], r["recording_id"])
        for s in index["shards"]
        for r in s["recordings"]
        if r["samples"]
    ] + [
        Assignment(r["split"], r["dataset"], r["subject"] or r["recording_id"], r["recording_id"])
        for r in index["recordings"]
    ]
    packed_cfg = _split_config(index["split_config"])
    leakage = check_leakage(assignments, packed_cfg, downstream_subjects=downstream_subjects)
    check_leakage(
        assignments,
        catalog.split_config(namespaces=packed_cfg.namespaces),
        downstream_subjects=downstream_subjects,
    )

    splits: dict[str, Any] = {}
    subjects: dict[str, set] = defaultdict(set)
    recs_in: dict[str, set] = defaultdict(set)
    hist: Counter[str] = Counter()
    spectra: dict[str, dict[str, Any]] = {}
    for s in index["shards"]:
        hist.update(s["channel_hist"])
        for t, sp in s.get("spectra", {}).items():
            acc = spectra.setdefault(t, {"n": 0, "sum": [0.0] * len(sp["sum"])})
            acc["n"] += sp["n"]
            acc["sum"] = [a + b for a, b in zip(acc["sum"], sp["sum"], strict=True)]
        for r in s["recordings"]:
            if not r["samples"]:
                continue
            sp = splits.setdefault(
                r["split"],
                {"samples": 0, "hours": 0.0, "by_dataset": {}, "by_modality": {}, "by_device": {}},
            )
            hours = r["samples"] * window_s / 3600.0
            sp["samples"] += r["samples"]
            sp["hours"] += hours
            for key, val in (
                ("by_dataset", r["dataset"]),
                ("by_modality", r["kind"]),
                ("by_device", catalog.device(r["dataset"])),
            ):
                b = sp[key].setdefault(val or "unknown", {"samples": 0, "hours": 0.0})
                b["samples"] += r["samples"]
                b["hours"] += hours
            subjects[r["split"]].add((r["dataset"], r["subject"] or r["recording_id"]))
            recs_in[r["split"]].add(r["recording_id"])
    for k, sp in splits.items():
        sp["subjects"], sp["recordings"] = len(subjects[k]), len(recs_in[k])
    _round(splits)

    nfft = int(index["pack_config"]["spectrum_nfft"])
    sfreq = float(index["pack_config"]["sfreq"])
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": {
            "brainomni": __version__,
            "git": _git_commit(),
            "packed_with": index.get("code_version"),
        },
        "shards_root": redact(shards_url.rstrip("/")),
        "pack_index": {"sha256": hashlib.sha256(raw).hexdigest(), "plan_hash": index["plan_hash"]},
        "packing": {"config": index["pack_config"], "hash": index["pack_config_hash"]},
        "splitting": {"config": index["split_config"], "hash": index["split_config_hash"]},
        "cleaning": {
            "configs": index["cleaning_configs"],
            "hashes": sorted(index["cleaning_configs"]),
        },
        "sources": _sources(index["recordings"], catalog),
        "splits": dict(sorted(splits.items())),
        "totals": {
            "samples": sum(s["samples"] for s in index["shards"]),
            "hours": round(sum(sp["hours"] for sp in splits.values()), 6),
            "shards": len(index["shards"]),
            "bytes": sum(s["bytes"] for s in index["shards"]),
        },
        "channel_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "rejected_windows": index["rejected_windows"],
        "dropped_recordings": dict(
            sorted(Counter(d["reason"] for d in index["dropped_recordings"]).items())
        ),
        "leakage_check": leakage,
        "spectra": {
            t: {
                "sfreq": sfreq,
                "nfft": nfft,
                "n": v["n"],
                "mean": [float(f"{x / v['n']:.6g}") for x in v["sum"]],
            }
            for t, v in sorted(spectra.items())
        },
        "shards": [
            {
                "uri": redact(join_url(shards_url, s["path"])),
                "path": s["path"],
                "split": s["split"],
                "sha256": s["sha256"],
                "bytes": s["bytes"],
                "samples": s["samples"],
                "channel_hist": s["channel_hist"],
            }
            for s in index["shards"]
        ],
    }
    manifest["content_hash"] = content_hash(manifest)
    return manifest


def build_token_manifest(
    tokens_url: str, name: str, version: str, *, storage_options: dict | None = None
) -> dict[str, Any]:
    """The published form of the token manifest a tokenize run wrote at ``tokens_url``: its
    content (checked against its own hash) under ``name`` and ``version``."""
    src = join_url(tokens_url, MANIFEST_NAME)
    try:
        m = read_manifest(src, storage_options, formats=(TOKEN_MANIFEST_FORMAT,))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{redact(tokens_url)} holds neither a pack ({INDEX_NAME}) nor a token manifest "
            f"({MANIFEST_NAME}): finish the pack or the tokenize run first"
        ) from None
    if content_hash(m) != m.get("content_hash"):
        raise ValueError(f"{redact(src)}: content_hash does not match (edited?); tokenize again")
    out = {
        **m,
        "name": name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": {"brainomni": __version__, "git": _git_commit()},
        "totals": {
            "samples": sum(int(s["samples"]) for s in m["shards"]),
            "shards": len(m["shards"]),
            "bytes": sum(int(s["bytes"]) for s in m["shards"]),
        },
    }
    out["content_hash"] = content_hash(out)
    return out


def _split_config(d: dict[str, Any]) -> SplitConfig:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return SplitConfig(**{k: tup(v) for k, v in d.items()})


def _round(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "hours" and isinstance(v, float):
                obj[k] = round(v, 6)
            else:
                _round(v)


def _sources(recordings: list[dict[str, Any]], catalog: Catalog) -> list[dict[str, Any]]:
    """Per dataset: versions, counts and a checksum over (recording, source checksum, config)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recordings:
        by[r["dataset"] or "unknown"].append(r)
    out = []
    for ds, recs in sorted(by.items()):
        info = catalog.get(ds)
        rows = sorted(
            f"{r['recording_id']}\x1f{r['source_checksum'] or ''}\x1f{r['cleaning_config_hash']}"
            for r in recs
        )
        out.append(
            {
                "dataset": ds,
                "versions": sorted({r["dataset_version"] for r in recs}),
                "catalog_version": info.version if info else None,
                "device": info.device if info else "unknown",
                "modality": sorted({r["kind"] for r in recs}),
                "recordings": len(recs),
                "subjects": len({r["subject"] or r["recording_id"] for r in recs}),
                "without_source_checksum": sum(1 for r in recs if not r["source_checksum"]),
                "checksum": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
            }
        )
    return out


def publish(
    shards_url: str,
    name: str,
    version: str,
    out_dir: str | Path = "manifests",
    *,
    catalog: Catalog | None = None,
    downstream_subjects: list[tuple[str, str]] = (),
    storage_options: dict | None = None,
    card: bool = True,
) -> Path:
    """Build, check and write ``OUT/<name>/<version>/manifest.json`` (+ card); its path.

    Raises :class:`ManifestExists` when that version is already published and
    :class:`~brainomni.splits.LeakageError` when the leakage check fails (nothing written).
    """
    folder = Path(out_dir) / name / version
    target = folder / MANIFEST_NAME
    if target.exists():
        raise ManifestExists(f"{target} exists: published versions are immutable; bump the version")
    manifest = build_manifest(
        shards_url,
        name,
        version,
        catalog=catalog,
        downstream_subjects=downstream_subjects,
        storage_options=storage_options,
    )
    folder.mkdir(parents=True, exist_ok=True)
    # Everything is staged in a folder of this run; the manifest is claimed with an exclusive
    # hard link (fails when the version exists), and only the winner moves its card in, so a
    # losing concurrent publish never leaves its card beside the winner's manifest.
    stage = Path(tempfile.mkdtemp(prefix=".publish-", dir=folder))
    try:
        if card:
            from .card import write_card

            write_card(manifest, stage)
        tmp = stage / MANIFEST_NAME
        tmp.write_bytes(manifest_bytes(manifest))
        try:
            claim(tmp, target)
        except FileExistsError:
            raise ManifestExists(
                f"{target} appeared while publishing (a concurrent publish "
                "won): published versions are immutable"
            ) from None
        move_into(sorted(f for f in stage.iterdir() if f.name != MANIFEST_NAME), folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("published %s %s (%s)", name, version, manifest["content_hash"][:16])
    return target


def load_manifest(path: str | Path, storage_options: dict | None = None) -> dict[str, Any]:
    """A manifest of either kind (:func:`brainomni.formats.manifest.read_manifest`)."""
    return read_manifest(path, storage_options)
