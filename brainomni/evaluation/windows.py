"""Labelled windows from real recordings, cut exactly as pretraining windows are.

:func:`build_labelled_set` takes a :class:`~brainomni.evaluation.recipes.Recipe` and a source
(a BIDS root, a TUH root, or a list of files / :class:`~brainomni.records.RecordingRef`),
and for every recording:

1. cleans it with :func:`brainomni.clean.preprocess_recording` into a recording store
   (the pretraining cleaning chain and config; its hash goes into ``meta``);
2. finds its labels (:mod:`brainomni.evaluation.labels`): events for event-locked recipes
   (window = ``[onset + tmin_s, onset + tmin_s + window_s)``), otherwise one label for the
   recording/subject and consecutive windows (``brainomni.pack.windows.window_starts``);
3. cuts the windows from the store with the pack's own code: sensor positions normalised
   (``normalise_positions``), windows over ``BAD_*`` segments, non-finite, flat or clipped
   windows rejected (``qc_reason``), the rest normalised per window and sensor type
   (``normalise_window``) and cast to the pack dtype (float16, overflow rejected).

Every recording ends in the ledger (``meta["recordings"]``) as ``ok``, ``skipped`` (reason)
or ``failed`` (reason, error class); rejected windows are counted by reason. Programming
errors propagate.

:func:`save_labelled_set` / :func:`load_labelled_set` write and read a set without pickles:
one WebDataset tar in the pretraining sample format (``KEY.signal.npy``, ``KEY.sensors.npy``,
``KEY.sensor_type.npy``, ``KEY.json`` with label, subject, recording id and onset) plus
``labelled_set.json`` (classes, name, meta, the tar's sha256 and sample count). Loading
checks the tar with the shard checker the loader uses (:mod:`brainomni.formats.sample`:
sizes and npy headers before any allocation) and the index against the tar.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import RecordingOutcome
from ..io.redact import redact
from ..pack.config import PackConfig
from ..pack.windows import normalise_window, qc_reason, window_starts
from ..records import RecordingRef
from ..signal.config import DEFAULT_CONFIG, CleanConfig
from .data import (  # noqa: F401 - the set format lives in data.py; re-exported here
    INDEX_NAME,
    LabelledSet,
    Window,
    load_labelled_set,
    save_labelled_set,
)
from .labels import (
    LabelError,
    events_from_annotations,
    events_from_stim,
    events_tsv_for,
    official_split,
    participant_label,
    read_events_tsv,
    read_label_table,
    read_tuev_rec,
    tuab_label,
    tuev_rec_for,
)
from .recipes import Recipe
from .refs import recording_refs

log = logging.getLogger(__name__)


def pack_config_for(recipe: Recipe, config: CleanConfig = DEFAULT_CONFIG) -> PackConfig:
    """The pack config of a recipe's windows: the pretraining defaults (eps, QC rules,
    positions, float16) with the recipe's window and stride at the store rate."""
    window = recipe.window_s
    nfft = min(512, int(round(window * config.sfreq)))
    return PackConfig(
        profile=f"downstream-{recipe.name}",
        window_s=window,
        stride_s=recipe.stride,
        sfreq=config.sfreq,
        spectrum_nfft=nfft,
    )


# --------------------------------------------------------------------------- one recording


class _Skip(Exception):
    def __init__(self, reason: str, error_class: str) -> None:
        super().__init__(reason)
        self.reason, self.error_class = reason, error_class


def _recording_events(recipe: Recipe, ref: RecordingRef, storage_options) -> tuple[list, str]:
    """The events of one recording and where they came from."""
    if recipe.labels == "tuev":
        return read_tuev_rec(tuev_rec_for(ref.uri), storage_options), "tuev_rec"
    src = recipe.event_source
    if src in ("auto", "bids"):
        tsv = events_tsv_for(ref.uri, storage_options)
        if tsv is not None:
            return read_events_tsv(tsv, recipe.event_column, storage_options), "events.tsv"
        if src == "bids":
            raise _Skip(f"{ref.uri}: no BIDS events.tsv beside it", "NoEvents")
    from ..readers import open_raw

    with open_raw(ref.uri, fmt=ref.format, storage_options=storage_options) as opened:
        if src in ("auto", "annotations"):
            ev = events_from_annotations(opened.raw)
            if ev or src == "annotations":
                return ev, "annotations"
        return events_from_stim(opened.raw), "stim"


_RUN_IN_NAME = re.compile(r"R(?P<run>\d{1,3})(?:\.[A-Za-z0-9]+)+$")


def _run_number(ref: RecordingRef) -> int | None:
    """The run of a recording: its BIDS ``run`` entity, else ``R<nn>`` ending its file name
    (PhysioNet eegmmidb ``S001R04.edf``)."""
    if ref.run.isdigit():
        return int(ref.run)
    m = _RUN_IN_NAME.search(os.path.basename(ref.uri.rstrip("/")))
    return int(m["run"]) if m else None


def _fixed_label(recipe: Recipe, ref: RecordingRef, table: dict[str, str] | None) -> str | None:
    if recipe.labels == "participants":
        return participant_label(ref.extra, recipe.label_column)
    if recipe.labels == "tuab":
        got = tuab_label(ref.relpath or ref.uri)
        return got[0] if got else None
    if recipe.labels == "table":
        assert table is not None
        key = ref.subject if recipe.label_key == "subject" else (ref.relpath or ref.uri)
        return table.get(key)
    raise AssertionError(recipe.labels)


def store_path(work_dir: str, ref: RecordingRef) -> str:
    """Where a recording's store lives: ``work_dir/recordings/<dataset>/<recording_id>.zarr``,
    the ingest job's layout, so an ingest run into ``work_dir`` (Ray, many workers) leaves
    stores that :func:`build_labelled_set` reuses."""
    return os.path.join(
        work_dir, "recordings", ref.dataset or "unknown", f"{ref.recording_id}.zarr"
    )


def _store_ok(uri: str, ref: RecordingRef, config: CleanConfig) -> bool:
    """A complete store of this recording, source checksum and cleaning config hash."""
    from ..pack.plan import read_recording_info

    try:
        info = read_recording_info(uri)
    except (FileNotFoundError, KeyError, ValueError, TypeError):  # incomplete or foreign
        return False
    same_source = ref.checksum is None or info.source_checksum == ref.checksum
    return info.config_hash == config.hash and info.recording_id == ref.recording_id and same_source


def cut_windows(
    store: str,
    items: Sequence[tuple[int, int]],
    pack: PackConfig,
    *,
    subject: str,
    recording_id: str,
    storage_options: dict | None = None,
) -> tuple[list[Window], Counter[str]]:
    """Windows of ``pack.window`` samples at ``(start sample, label)`` of a store, checked and
    normalised as :mod:`brainomni.pack.shards` does; ``(windows, rejected by reason)``."""
    # The pack's own per-recording reader (positions normalised, bad spans): private to
    # brainomni.pack.shards, used here on purpose so that downstream windows are cut by the
    # very code that cuts pretraining windows.
    from ..pack.plan import read_recording_info
    from ..pack.shards import _Recording

    info = read_recording_info(store, storage_options)
    rec = _Recording(info, pack, storage_options)
    dtype = np.dtype(pack.dtype)
    w = pack.window
    out: list[Window] = []
    rejected: Counter[str] = Counter()
    for start, label in sorted(items):
        if start < 0 or start + w > info.n_times:
            rejected["out_of_range"] += 1
            continue
        reason = None if rec.sensors_ok else "nonfinite_positions"
        if reason is None and rec.overlaps_bad(start, w):
            reason = "bad_segment"
        x = None
        if reason is None:
            x = np.asarray(rec.signal[:, start : start + w], dtype=np.float32)
            reason = qc_reason(x, rec.types, pack.qc)
        if reason is None:
            y = normalise_window(x, rec.types, eps=rec.eps).astype(dtype)
            if not np.all(np.isfinite(y)):
                reason = "float16_overflow"
        if reason is not None:
            rejected[reason] += 1
            continue
        out.append(
            Window(
                signal=y,
                sensors=rec.sensors,
                sensor_type=rec.types,
                label=int(label),
                subject=subject,
                recording_id=recording_id,
                onset_s=start / pack.sfreq,
            )
        )
    return out, rejected


# --------------------------------------------------------------------------- the builder


def build_labelled_set(
    recipe: Recipe,
    source: str | Sequence[str | RecordingRef],
    *,
    work_dir: str,
    config: CleanConfig = DEFAULT_CONFIG,
    label_table: str | None = None,
    storage_options: dict | None = None,
    name: str | None = None,
) -> LabelledSet:
    """The labelled windows of ``recipe`` over ``source`` (see the module docstring).

    ``work_dir`` holds the recording stores (:func:`store_path`; a store of the same
    recording, source checksum and cleaning config hash is reused, e.g. one an ingest run
    into ``work_dir`` wrote). ``label_table``: the TSV/CSV of
    recipes with ``labels = "table"``.
    """
    from ..clean import preprocess_recording

    if recipe.labels == "table" and not label_table:
        raise ValueError(f"recipe {recipe.name!r} takes labels from a table: pass label_table")
    table = (
        read_label_table(label_table, recipe.label_key, recipe.label_column, storage_options)
        if recipe.labels == "table"
        else None
    )
    pack = pack_config_for(recipe, config)
    refs, crawl_skipped, kind = recording_refs(recipe, source, storage_options)
    ledger: list[dict[str, Any]] = [
        {
            "recording_id": r.recording_id,
            "uri": redact(r.uri),
            "subject": r.subject,
            "outcome": "skipped",
            "reason": redact(why),
            "error_class": "Crawl",
        }
        for r, why in crawl_skipped
    ]
    windows: list[Window] = []
    rejected: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    split_of: dict[str, str] = {}
    split_conflicts: list[str] = []
    for ref in sorted(refs, key=lambda r: r.recording_id):
        entry: dict[str, Any] = {
            "recording_id": ref.recording_id,
            "uri": redact(ref.uri),
            "subject": ref.subject,
        }
        ledger.append(entry)
        subject = f"{ref.dataset or recipe.name}/{ref.subject}"
        try:
            if not ref.subject:
                raise _Skip(f"{ref.uri}: no subject id (folds need one)", "NoSubject")
            # labels first: a recording without any label is not worth cleaning
            if recipe.event_locked:
                events, ev_src = _recording_events(recipe, ref, storage_options)
                entry["events"] = {"source": ev_src, "n": len(events)}
                run = _run_number(ref) if recipe.label_map_by_run else None
                if recipe.label_map_by_run and run not in dict(recipe.label_map_by_run):
                    raise _Skip(
                        f"{ref.uri}: run {run} has no label map in {recipe.name}", "OtherRun"
                    )
                labelled = [(e, recipe.map_label(e.value, run)) for e in events]
                unmapped.update(e.value for e, lab in labelled if lab is None)
                labelled = [(e, lab) for e, lab in labelled if lab is not None]
                if not labelled:
                    raise _Skip(
                        f"{ref.uri}: no event maps to a class of {recipe.name} ({ev_src})",
                        "NoLabelledEvents",
                    )
            else:
                raw_label = _fixed_label(recipe, ref, table)
                lab = None if raw_label is None else recipe.map_label(raw_label)
                if lab is None:
                    if raw_label is not None:
                        unmapped[raw_label] += 1
                    raise _Skip(
                        f"{ref.uri}: no label for subject {ref.subject!r} "
                        f"({recipe.labels}: {raw_label!r})",
                        "NoLabel",
                    )
            if recipe.split == "official":
                split = None
                if recipe.labels == "tuab":
                    got = tuab_label(ref.relpath or ref.uri)
                    split = got[1] if got else None
                else:
                    split = official_split(ref.relpath or ref.uri)
                if split is None:
                    raise _Skip(f"{ref.uri}: no train/eval folder in its path", "NoSplit")
                if split_of.setdefault(subject, split) != split:
                    split_conflicts.append(subject)  # folds must never split a subject
                    raise _Skip(
                        f"{ref.uri}: subject {subject} is already in the {split_of[subject]} "
                        f"split, this recording is in {split}",
                        "SplitConflict",
                    )
            store = store_path(work_dir, ref)
            if not _store_ok(store, ref, config):
                res = preprocess_recording(
                    ref, out=store, config=config, storage_options=storage_options
                )
                if res.outcome != "ok":
                    entry.update(
                        outcome=res.outcome, reason=redact(res.reason), error_class=res.error_class
                    )
                    continue
            if recipe.event_locked:
                items = [
                    (int(round((e.onset_s + recipe.tmin_s) * pack.sfreq)), lab)
                    for e, lab in labelled
                ]
            else:
                from ..pack.plan import read_recording_info

                n = read_recording_info(store).n_times
                items = [(int(s), lab) for s in window_starts(n, pack.window, pack.stride)]
            got, rej = cut_windows(
                store, items, pack, subject=subject, recording_id=ref.recording_id
            )
        except _Skip as s:
            entry.update(outcome="skipped", reason=redact(s.reason), error_class=s.error_class)
            continue
        except LabelError as exc:
            entry.update(outcome="failed", reason=redact(str(exc)), error_class="BadLabels")
            continue
        except RecordingOutcome as o:  # reading the file for its annotations
            entry.update(outcome=o.outcome, reason=redact(o.reason), error_class=o.error_class)
            continue
        windows.extend(got)
        rejected.update(rej)
        entry.update(
            outcome="ok" if got else "skipped",
            reason="" if got else ("every window rejected" if items else "shorter than one window"),
            error_class=None if got else "NoWindows",
            windows=len(got),
            rejected=dict(sorted(rej.items())),
        )
    meta = {
        "recipe": recipe.name,
        "recipe_hash": recipe.hash,
        "recipe_fields": recipe.to_dict(),
        "clean_config_hash": config.hash,
        "pack_config_hash": pack.hash,
        "window_s": recipe.window_s,
        "sfreq": pack.sfreq,
        "source": redact(source) if isinstance(source, str) else "files",
        "source_kind": kind,
        "split": recipe.split,
        "folds": recipe.folds,
        "seed": recipe.seed,
        "rejected": dict(sorted(rejected.items())),
        "unmapped_labels": dict(sorted(unmapped.items())),
        "outcomes": dict(Counter(e["outcome"] for e in ledger)),
        "recordings": ledger,
    }
    if recipe.split == "official":
        meta["official_split"] = dict(sorted(split_of.items()))
        meta["split_conflicts"] = sorted(set(split_conflicts))
    if not windows:
        log.warning("recipe %s: no window survived (see meta['recordings'])", recipe.name)
    return LabelledSet(windows, list(recipe.classes), name or recipe.name, meta)
