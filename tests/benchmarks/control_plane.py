"""The control plane at internet scale, on generated metadata (no signal).

Each step calls the library's own functions the way a job does, on inputs generated for a
given number of recordings ``n`` (the benchmark's default is the issue's scale: 200,000
recordings, 50,000 subjects, 2 million windows, 100,000 shards, world size 512):

``crawl+plan``
    Every recording crawled from generated BIDS datasets (a read-only fsspec filesystem,
    protocol ``genbids://``, that answers ``find``, ``cat_file`` and friends from the
    generator: no file exists, but every listing, sidecar and checksum goes through the
    crawler) and frozen into the ingest's work list (``recordings.parquet``, ``plan.json``).
``ledger segments``, ``ledger fold``
    A job's ledger: ``n`` rows received by the driver, ``n`` part files on disk (1 % of them
    from an earlier, killed driver: real parts the fold must read; the other part files
    exist so that removing them is counted). While the workers run, the driver folds every
    5,000 received rows into a segment and removes their parts (``ledger segments``, the
    total over the run: not on the plan's path); at the end it folds the segments, the
    remaining parts and the earlier driver's parts (``ledger fold``); then it is reread.
``pack plan``
    ``n`` recordings' store attributes (generated) cut into shards; the plan hashed.
``splits``
    Subject splits for every recording and the leakage check.
``manifest``
    The pack index of every shard written, then built, published (with its dataset card),
    verified (shard hashing mocked: verify's own loop runs), loaded and diffed against a
    second version.
``loader``
    The last rank's loader started on the manifest at world size 512: its streams planned.

Used by ``bench_control_plane.py`` (timings, RSS) and ``tests/test_control_plane.py``
(deterministic call counts at 1/100 of the scale: linear growth).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

# --------------------------------------------------------------------------- the generator

RECS_PER_DATASET = 1000
RUNS_PER_SUBJECT = 4  # 200,000 recordings -> 50,000 subjects
N_EEG = 64


@dataclass(frozen=True)
class Shape:
    """What is generated for ``n`` recordings."""

    n: int
    world: int = 512

    @property
    def datasets(self) -> int:
        return max(4, -(-self.n // RECS_PER_DATASET))  # every device family, any n

    def recordings_in(self, k: int) -> int:
        per = -(-self.n // self.datasets)
        return max(0, min(per, self.n - k * per))

    @property
    def subjects(self) -> int:
        return sum(-(-self.recordings_in(k) // RUNS_PER_SUBJECT) for k in range(self.datasets))


def _kind(k: int) -> str:
    """Dataset k's device family: EEG (BrainVision, EDF), MEG (FIF, CTF folders)."""
    return ("vhdr", "edf", "fif", "ds")[k % 4]


def dataset_files(k: int, n_recs: int) -> dict[str, int]:
    """Relative path -> size of every file of generated dataset ``k``."""
    kind = _kind(k)
    mod = "eeg" if kind in ("vhdr", "edf") else "meg"
    files = {
        "dataset_description.json": 120,
        "participants.tsv": 40 * (n_recs // RUNS_PER_SUBJECT + 1),
        "README": 800,
        f"task-rest_{mod}.json": 90,
    }
    for i in range(n_recs):
        sub, run = i // RUNS_PER_SUBJECT, i % RUNS_PER_SUBJECT + 1
        stem = f"sub-{sub:05d}/{mod}/sub-{sub:05d}_task-rest_run-{run}"
        files[f"{stem}_{mod}.json"] = 300
        files[f"{stem}_channels.tsv"] = 2000
        files[f"{stem}_events.tsv"] = 500
        if kind == "vhdr":
            for ext in (".vhdr", ".vmrk", ".eeg"):
                files[f"{stem}_eeg{ext}"] = 50_000_000 if ext == ".eeg" else 4000
        elif kind == "edf":
            files[f"{stem}_eeg.edf"] = 50_000_000
        elif kind == "fif":
            files[f"{stem}_meg.fif"] = 400_000_000
        else:
            for part in ("meg4", "res4", "infods", "acq", "hc"):
                files[f"{stem}_meg.ds/sub_{part}.{part}"] = 300_000_000 if part == "meg4" else 9000
        if i % RUNS_PER_SUBJECT == 0:
            files[f"sub-{sub:05d}/{mod}/sub-{sub:05d}_coordsystem.json"] = 200
            if mod == "eeg":
                files[f"sub-{sub:05d}/{mod}/sub-{sub:05d}_electrodes.tsv"] = 2400
    return files


def _sidecar(rel: str, k: int, n_recs: int) -> bytes:
    name = rel.rsplit("/", 1)[-1]
    if name == "dataset_description.json":
        return json.dumps({"Name": f"gen{k:05d}", "BIDSVersion": "1.8.0"}).encode()
    if name == "participants.tsv":
        rows = ["participant_id\tage\tsex"] + [
            f"sub-{s:05d}\t{20 + s % 50}\t{'MF'[s % 2]}"
            for s in range(-(-n_recs // RUNS_PER_SUBJECT))
        ]
        return "\n".join(rows).encode()
    if name.endswith("_channels.tsv"):
        # the bad channel differs between subjects (64 distinct files per dataset): the
        # crawl's parse-once-per-content cache gets no more help than on real datasets
        sub = int(name.split("_", 1)[0].removeprefix("sub-"))
        typ = "EEG" if _kind(k) in ("vhdr", "edf") else "MEGGRADAXIAL"
        return _channels_tsv(typ, sub * 7 % N_EEG)
    if name.endswith("_coordsystem.json"):
        return b'{"EEGCoordinateSystem": "CapTrak", "EEGCoordinateUnits": "m"}'
    if name.endswith(".json"):
        return b'{"PowerLineFrequency": 50, "Manufacturer": "Generated"}'
    return b"onset\tduration\ttrial_type\n"


@functools.lru_cache(maxsize=256)
def _channels_tsv(typ: str, bad: int) -> bytes:
    rows = ["name\ttype\tunits\tstatus"] + [
        f"C{c:03d}\t{typ}\tV\t{'bad' if c == bad else 'good'}" for c in range(N_EEG)
    ]
    return "\n".join(rows).encode()


class GeneratedBIDS(AbstractFileSystem):
    """``genbids://gen00012`` is generated dataset 12 (``n`` recordings over all of them).

    Read-only and metadata-only: listings carry sizes and ETags, ``cat_file`` answers
    sidecars (JSON/TSV); data files cannot be opened.
    """

    protocol = "genbids"
    root_marker = ""
    n_total = 0  # set by configure()

    @classmethod
    def configure(cls, n: int) -> Shape:
        cls.n_total = n
        cls.clear_instance_cache()
        return Shape(n)

    @staticmethod
    def _split(path: str) -> tuple[int, str]:
        path = path.removeprefix("genbids://").strip("/")
        head, _, rel = path.partition("/")
        return int(head.removeprefix("gen")), rel

    def _files(self, k: int) -> dict[str, int]:
        cache = self.__dict__.setdefault("_gen_cache", {})
        if k not in cache:
            cache.clear()  # one dataset at a time: the crawl visits them in turn
            cache[k] = dataset_files(k, Shape(self.n_total).recordings_in(k))
        return cache[k]

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        k, rel = self._split(path)
        root = f"gen{k:05d}"
        out: dict[str, dict[str, Any]] = {}
        for r, size in self._files(k).items():
            if rel and not r.startswith(rel + "/"):
                continue
            etag = hashlib.md5(f"{k}/{r}".encode()).hexdigest()
            out[f"{root}/{r}"] = {"name": f"{root}/{r}", "size": size, "type": "file", "ETag": etag}
        return out if detail else sorted(out)

    def info(self, path, **kwargs):
        k, rel = self._split(path)
        if not rel:
            return {"name": f"gen{k:05d}", "size": 0, "type": "directory"}
        files = self._files(k)
        if rel in files:
            return {"name": path, "size": files[rel], "type": "file"}
        raise FileNotFoundError(path)

    def isdir(self, path):
        return self._split(path)[1] == "" or self.info(path)["type"] == "directory"

    def ls(self, path, detail=True, **kwargs):
        return list(self.find(path, detail=True).values()) if detail else self.find(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        k, rel = self._split(path)
        if rel not in self._files(k):
            raise FileNotFoundError(path)
        return _sidecar(rel, k, Shape(self.n_total).recordings_in(k))[start:end]

    def _open(self, path, mode="rb", **kwargs):
        raise PermissionError(f"{path}: generated metadata has no content")

    def invalidate_cache(self, path=None):
        pass


fsspec.register_implementation("genbids", GeneratedBIDS, clobber=True)


# --------------------------------------------------------------------------- the steps


def step_crawl_plan(shape: Shape, work: str) -> dict[str, Any]:
    from brainomni.ingest.plan import plan
    from brainomni.signal.config import DEFAULT_CONFIG
    from brainomni.sources import Source

    GeneratedBIDS.configure(shape.n)
    sources = [
        Source(url=f"genbids://gen{k:05d}", kind="bids", name=f"gen{k:05d}", version="1.0.0")
        for k in range(shape.datasets)
    ]
    p = plan(sources, os.path.join(work, "ingest"), config=DEFAULT_CONFIG)
    return {"recordings": len(p.recordings), "tasks": len(p.tasks), "_refs": p.recordings}


def _rows(refs: list[Any]) -> list[Any]:
    from brainomni.ingest.ledger import LedgerRow

    return [
        LedgerRow(
            recording_id=r.recording_id,
            dataset=r.dataset,
            relpath=r.relpath,
            uri=r.uri,
            outcome="ok" if i % 50 else "skipped",
            reason="" if i % 50 else "too short",
            attempt=1,
            source_checksum=r.checksum or "",
            config_hash="c0ffee",
            finished_at=f"2026-11-29T00:{i % 60:02d}:00+00:00",
        )
        for i, r in enumerate(refs)
    ]


def step_ledger(shape: Shape, work: str, refs: list[Any], every: int = 5000) -> dict[str, Any]:
    """Fold a finished job's ledger (see the module docstring), then reread it."""
    from brainomni.ingest.ledger import PARTS_DIR, part_name, read_ledger, write_part

    dest = os.path.join(work, "ledger")
    shutil.rmtree(dest, ignore_errors=True)
    rows = _rows(refs)
    parts = os.path.join(dest, PARTS_DIR)
    os.makedirs(parts)
    earlier = rows[::100]  # written by a driver that was killed before it folded them
    for row in earlier:
        write_part(dest, row)
    received = [r for i, r in enumerate(rows) if i % 100]
    placeholder = b"PAR1"  # never read: the fold has these rows from the workers' replies
    for row in received:
        with open(os.path.join(parts, part_name(row.recording_id, row.attempt)), "wb") as fh:
            fh.write(placeholder)

    from brainomni.ingest.ledger import Ledger, LedgerRow

    ledger = Ledger(dest, LedgerRow)  # one object for the run, as run_stage has

    def segments() -> int:
        """What the driver does while the workers run (run_stage's default: every 5,000
        received rows become a segment and their parts are removed; the last rows (fewer
        than 5,000) are left for the fold, as in a job."""
        done = len(received) - len(received) % every
        for i in range(0, done, every):
            ledger.flush(received[i : i + every])
        return done // every

    return {
        "_segments": segments,
        # as run_stage: the rows no segment holds (the last ones, fewer than ``every``)
        "_fold": lambda: ledger.compact(received[len(received) - len(received) % every :]),
        "_read": lambda: read_ledger(dest),
    }


def pack_infos(shape: Shape, refs: list[Any]) -> list[Any]:
    """One committed store per recording, as the pack plan reads it (10 windows each)."""
    from brainomni.pack.plan import RecordingInfo

    out = []
    for i, r in enumerate(refs):
        meg = r.modality == "meg"
        out.append(
            RecordingInfo(
                uri=f"/stores/{r.recording_id}.zarr",
                recording_id=r.recording_id,
                dataset=r.dataset,
                dataset_version=r.dataset_version,
                subject=r.subject,
                session=r.session,
                task=r.task,
                run=r.run,
                modality=r.modality,
                source_checksum=r.checksum,
                config_hash="c0ffee",
                n_times=10 * 2560 + i % 7,
                sfreq=256.0,
                n_eeg=0 if meg else N_EEG,
                n_mag=102 if meg else 0,
                n_grad=204 if meg else 0,
            )
        )
    return out


def pack_config(n_shards_wanted: int, infos: list[Any]) -> Any:
    from brainomni.pack.config import PackConfig
    from brainomni.pack.plan import planned_sample_bytes
    from brainomni.pack.windows import window_starts

    cfg = PackConfig()
    step = max(1, len(infos) // 1000)
    sample = infos[::step]
    total = sum(
        len(window_starts(i.n_times, cfg.window, cfg.stride))
        * planned_sample_bytes(i.n_channels, cfg)
        for i in sample
    ) * (len(infos) / len(sample))
    from dataclasses import replace

    return replace(cfg, target_shard_bytes=max(1, int(total / n_shards_wanted)))


def fake_index(plan: Any) -> dict[str, Any]:
    """The pack index a finished pack of ``plan`` writes (shard hashes generated)."""
    from brainomni.pack.run import PACK_FORMAT, index_recording
    from brainomni.pack.shards import shard_recording

    cfg = plan.config
    shards = []
    for spec in plan.shards:
        recs, samples, hist = [], 0, {}
        for piece in spec.pieces:
            info = plan.recordings[piece.rec]
            recs.append(shard_recording(info, piece.count, piece.count))
            samples += piece.count
            hist[str(info.n_channels)] = hist.get(str(info.n_channels), 0) + piece.count
        path = f"{spec.split}/shard-{spec.index:06d}.tar"
        shards.append(
            {
                "split": spec.split,
                "index": spec.index,
                "path": path,
                "sha256": hashlib.sha256(path.encode()).hexdigest(),
                "bytes": spec.planned_bytes,
                "samples": samples,
                "seconds": samples * cfg.window_s,
                "channel_hist": hist,
                "rejected": {},
                "recordings": recs,
                "spectra": {},
            }
        )
    return {
        "format": PACK_FORMAT,
        "plan_hash": plan.hash,
        "code_version": "bench",
        "pack_config": cfg.to_dict(),
        "pack_config_hash": cfg.hash,
        "split_config": plan.split_config.to_dict(),
        "split_config_hash": plan.split_config.hash,
        "cleaning_configs": {"c0ffee": {}},
        "recordings": [index_recording(r) for r in plan.recordings],
        "dropped_recordings": plan.dropped,
        "rejected_windows": {},
        "shards": shards,
        "empty_shards": [],
    }


def run_all(
    n: int,
    work: str,
    *,
    shards: int | None = None,
    world: int = 512,
    timer: Callable | None = None,
    segment_rows: int = 5000,
) -> dict[str, Any]:
    """Every step at scale ``n`` (shards default n/2); ``timer(name, fn)`` runs each step."""
    from unittest import mock

    from brainomni.loader.loader import ShardLoader
    from brainomni.manifests import publish as pub
    from brainomni.manifests import verify as verify_mod
    from brainomni.manifests.diff import diff as diff_manifests
    from brainomni.manifests.verify import verify as verify_manifest
    from brainomni.pack.plan import plan_from_infos
    from brainomni.splits import Assignment, SplitConfig, assign_split, check_leakage

    timer = timer or (lambda name, fn: fn())
    shape = Shape(n, world)
    out: dict[str, Any] = {"n": n, "datasets": shape.datasets, "subjects": shape.subjects}
    got = timer("crawl+plan", lambda: step_crawl_plan(shape, work))
    refs = got.pop("_refs")
    out.update(got)
    led = step_ledger(shape, work, refs, segment_rows)
    out["ledger_segments"] = timer("ledger segments", led["_segments"])
    folded = timer("ledger fold", led["_fold"])
    reread = timer("ledger read", led["_read"])
    out["ledger_rows"] = len(folded)
    assert len(reread) == len(folded) == len(refs)
    # each job's driver holds only its own inputs: drop what a later job would not have
    led = folded = reread = None

    split_config = SplitConfig(unseen_datasets=(), excluded_datasets=(), namespaces=())

    def splits() -> dict[str, Any]:
        got = [assign_split(r.dataset, r.subject, split_config) for r in refs]
        assignments = [
            Assignment(s, r.dataset, r.subject, r.recording_id)
            for s, r in zip(got, refs, strict=True)
        ]
        return check_leakage(assignments, split_config)

    out["leakage"] = timer("splits", splits)
    infos = pack_infos(shape, refs)
    refs = None
    cfg = pack_config(shards or max(1, n // 2), infos)
    plan = timer("pack plan", lambda: plan_from_infos(infos, cfg, split_config))
    timer("pack plan hash", lambda: plan.hash)
    out["windows"] = sum(p.count for s in plan.shards for p in s.pieces)
    out["shards"] = len(plan.shards)

    shards_root = os.path.join(work, "shards")
    os.makedirs(shards_root, exist_ok=True)
    index = fake_index(plan)
    with open(os.path.join(shards_root, "index.json"), "w") as fh:
        json.dump(index, fh)
    index = plan = infos = None
    man_dir = os.path.join(work, "manifests")
    shutil.rmtree(man_dir, ignore_errors=True)
    from brainomni.manifests.catalog import Catalog

    catalog = Catalog([])
    path = timer(
        "manifest publish",
        lambda: pub.publish(shards_root, "bench", "1.0.0", man_dir, catalog=catalog),
    )
    manifest = timer("manifest load", lambda: pub.load_manifest(path))
    by_path = {s["path"]: s for s in manifest["shards"]}

    def fake_scan(url: str, *args: Any) -> tuple[str, int, int]:
        s = by_path[url[len(shards_root) + 1 :]]
        return s["sha256"], s["bytes"], s["samples"]

    with mock.patch.object(verify_mod, "scan_shard", fake_scan):
        rep = timer("manifest verify", lambda: verify_manifest(manifest))
    assert rep.ok, rep.problems[:3]
    other = json.loads(json.dumps(manifest))
    for s in other["shards"][::97]:
        s["sha256"] = hashlib.sha256(s["sha256"].encode()).hexdigest()
    out["diff_lines"] = len(timer("manifest diff", lambda: diff_manifests(manifest, other)))
    manifest = other = by_path = None

    def start_loader() -> Any:
        loader = ShardLoader(path, "train", rank=world - 1, world=world, micro_batch=8, chunk=64)
        for s in loader._my_streams():
            loader.plan.stream_runs(0, s)
        return loader

    loader = timer("loader start", start_loader)
    out["loader_samples_per_epoch"] = loader.samples_per_epoch
    return out
