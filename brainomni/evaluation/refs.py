"""Which recordings a downstream recipe reads: a BIDS root, a TUH root (TUAB/TUEV) or a list
of files / refs, each ref carrying the recipe's channel fixes and line frequency (used by
:func:`brainomni.evaluation.windows.build_labelled_set`)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace

from ..io.redact import redact
from ..records import RecordingRef
from .recipes import Recipe

_TUEV_NAME = re.compile(r"^(?P<subject>[A-Za-z0-9]+)_(?P<run>\d+)\.edf$", re.I)


def recording_refs(
    recipe: Recipe, source: str | Sequence[str | RecordingRef], storage_options: dict | None = None
) -> tuple[list[RecordingRef], list[tuple[RecordingRef, str]], str]:
    """``(recordings, skipped with reasons, source kind)`` of a source: a BIDS root (has
    ``dataset_description.json``), a TUH root (recipes with ``labels`` = tuab/tuev), or a list
    of files / refs. Every ref carries the recipe's channel fixes and line frequency."""
    from ..sensors.fixes import ChannelFixes

    fixes = recipe.fixes_json()
    if isinstance(source, str):
        from ..io.fs import get_fs
        from ..sources.bids import crawl_bids
        from ..sources.tuh import crawl_tuh

        fs, path = get_fs(source, storage_options)
        if fs.exists(f"{path.rstrip('/')}/dataset_description.json"):
            mods = {"eeg": ("eeg",), "meg": ("meg",)}.get(recipe.modality, ("eeg", "meg"))
            res = crawl_bids(
                source,
                name=recipe.dataset or None,
                version=recipe.version or None,
                storage_options=storage_options,
                modalities=mods,
                line_freq=recipe.line_freq,
            )
            kind = "bids"
        elif recipe.labels in ("tuab", "tuev"):
            res = crawl_tuh(
                source,
                name=recipe.dataset or recipe.name,
                version=recipe.version or "unknown",
                storage_options=storage_options,
                line_freq=recipe.line_freq,
            )
            kind = "tuh"
            if recipe.labels == "tuev":  # TUEV names files SUBJECT_NNNNNNNN.edf (no sSSS_tTTT)
                keep = []
                for r, why in res.skipped:
                    m = _TUEV_NAME.match(os.path.basename(r.relpath))
                    if m and why.startswith("not a TUH recording name"):
                        res.recordings.append(replace(r, subject=m["subject"], run=m["run"]))
                    else:
                        keep.append((r, why))
                res.skipped[:] = keep
        else:
            raise ValueError(
                f"recipe {recipe.name!r}: {redact(source)} is not a BIDS root (no "
                "dataset_description.json) and the recipe is not a TUH one (labels = tuab or "
                "tuev); give a BIDS root or a list of files"
            )
        recs, skipped = list(res.recordings), list(res.skipped)
    else:
        kind = "files"
        recs, skipped = [], []
        for item in source:
            if isinstance(item, RecordingRef):
                recs.append(item)
                continue
            from ..sources.bids import entities_from_fname

            uri = str(item)
            base = os.path.basename(uri.rstrip("/"))
            ents = entities_from_fname(base)
            recs.append(
                RecordingRef(
                    uri=uri,
                    dataset=recipe.dataset or recipe.name,
                    dataset_version=recipe.version,
                    relpath=os.path.basename(uri.rstrip("/")),
                    # the BIDS sub- entity of the name, else the file's stem: one file = one
                    # subject unless refs say otherwise
                    subject=ents.get("subject") or base.split(".")[0],
                    session=ents.get("session", ""),
                    task=ents.get("task", ""),
                    run=ents.get("run", ""),
                    line_freq=recipe.line_freq,
                )
            )
    out = []
    for r in recs:
        if fixes and not r.fixes:  # as the crawl attaches catalog fixes (checksum suffixed)
            tag = f"+fixes-{ChannelFixes.from_json(fixes).hash}"
            r = replace(r, fixes=fixes, checksum=f"{r.checksum or ''}{tag}")
        if r.line_freq is None and recipe.line_freq is not None:
            r = replace(r, line_freq=recipe.line_freq)
        out.append(r)
    return out, skipped, kind
