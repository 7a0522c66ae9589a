"""The end-of-job summary: counts by outcome, hours by dataset/modality/device, failures by reason."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from brainomni.pipeline.summary import (  # noqa: F401 - one writer, one failures table
    SUMMARY_FILE,
    failure_lines,
    write_summary,
)

from .ledger import ALREADY_DONE, LedgerRow

# What to do about each failure class (the row's reason has the details). Keys are exact
# error classes or the prefix before a dot (``ReadError.ValueError`` -> ``ReadError``).
FIXES: dict[str, str] = {
    "EmptyFile": "the file is empty: copy it again from the source",
    "TruncatedFile": "the file is shorter than its header says: copy it again",
    "CorruptHeader": "the header is damaged: copy the file again or drop it",
    "ReadError": "corrupt, truncated or not this format: copy it again or drop it",
    "MissingCompanion": "copy the recording with all its companion files",
    "MissingFile": "the file listed by the crawl is gone: recrawl (--recrawl)",
    "MissingDependency": "install the optional reader package named in the reason",
    "UnsupportedFormat": "convert it to a format MNE reads (FIF, EDF, BrainVision...)",
    "UnsafeCompanion": "a companion path leaves the recording's folder: fix the header",
    "StageError": "object storage error while copying: rerun the job",
    "SidecarDecodeError": "a sidecar is binary, not text: replace it with the real TSV/JSON",
    "SidecarTooLarge": "a sidecar is far too large to be one: replace it",
    "SidecarUnreadable": "a sidecar could not be read: check permissions/storage and rerun",
    "Unreadable": "a data file could not be read: check permissions/storage and rerun",
    "BadSidecarJSON": "fix the JSON sidecar named in the reason (or remove it)",
    "BadElectrodes": "fix the electrodes.tsv row named in the reason (numbers or n/a)",
    "BadCoordinateUnits": "set EEGCoordinateUnits in coordsystem.json to m, cm, mm or n/a",
    "ImplausibleGeometry": "check position units/values in the file or electrodes.tsv",
    "NonFiniteSignal": "the signal holds NaN/inf: the file or a channel is broken",
    "InterpolationError": "bad-channel interpolation failed: inspect the positions",
    "TooManyBadChannels": "too few good channels: nothing to do unless the marks are wrong",
    "NoPlaceableChannels": "give positions (electrodes.tsv) or 10-05 channel names",
    "TooShort": "nothing to do: too short to be used",
    "WorkerDied": "raise --task-memory, or inspect the recording (a reader crashed)",
    "TaskError": "the task failed outside the recording's processing: rerun; report if it stays",
    "Unexpected": "a case the code does not handle: report it with the example file",
}


def fix_for(error_class: str) -> str:
    """The advice of :data:`FIXES` for an error class (exact, then its prefix)."""
    if error_class in FIXES:
        return FIXES[error_class]
    head = error_class.split(".", 1)[0]
    return FIXES.get(head, "see the reason of the example row")


def failure_table(rows: Sequence[LedgerRow]) -> list[dict[str, Any]]:
    """One entry per error class of the ``failed`` rows: count, an example recording, its
    reason and the fix; most frequent first."""
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.outcome != "failed":
            continue
        cls = r.error_class or "unspecified"
        entry = table.setdefault(
            cls,
            {
                "error_class": cls,
                "count": 0,
                "example": r.relpath or r.uri,
                "reason": r.reason,
                "fix": fix_for(cls),
            },
        )
        entry["count"] += 1
    return sorted(table.values(), key=lambda e: (-e["count"], e["error_class"]))


def summarize(
    rows: Sequence[LedgerRow],
    *,
    crawl_skipped: Mapping[str, int] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of a ledger (one row per recording); hours are output hours."""
    hours: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    fails: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.outcome == "ok":
            hours["dataset"][r.dataset or "?"] += r.output_hours
            hours["modality"][r.modality or "?"] += r.output_hours
            hours["format"][r.format or "?"] += r.output_hours
        if r.outcome in ("failed", "skipped"):
            key = f"{r.outcome}: {r.error_class or 'unspecified'}"
            entry = fails.setdefault(key, {"count": 0, "example": r.reason, "recordings": []})
            entry["count"] += 1
            if len(entry["recordings"]) < 20:
                entry["recordings"].append(r.relpath or r.uri)
    return {
        "recordings": len(rows),
        "by_outcome": dict(sorted(Counter(r.outcome for r in rows).items())),
        "already_done": sum(1 for r in rows if r.reason == ALREADY_DONE),
        "hours": sum(r.output_hours for r in rows if r.outcome == "ok"),
        "hours_by": {k: dict(sorted(v.items())) for k, v in sorted(hours.items())},
        "drops_by_reason": dict(sorted(fails.items())),
        "failures": failure_table(rows),
        "crawl_skipped_by_reason": dict(sorted((crawl_skipped or {}).items())),
        "bytes_in": sum(r.bytes_in or 0 for r in rows),
        "bytes_out": sum(r.bytes_out or 0 for r in rows if r.outcome == "ok"),
        **({"run": dict(run)} if run else {}),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`summarize`'s output."""
    lines = [
        f"recordings: {summary['recordings']}  "
        + "  ".join(f"{k}={v}" for k, v in summary["by_outcome"].items())
        + f"  (already done before this run: {summary['already_done']})",
        f"hours of cleaned signal: {summary['hours']:.3f}",
    ]
    for key, label in (("dataset", "dataset"), ("modality", "modality"), ("format", "device")):
        for name, h in summary["hours_by"].get(key, {}).items():
            lines.append(f"  hours  {label:<8} {name:<40} {h:10.4f}")
    for key, entry in summary["drops_by_reason"].items():
        lines.append(f"  drop   {key:<50} {entry['count']:5d}  e.g. {entry['example'][:120]}")
    for reason, n in summary["crawl_skipped_by_reason"].items():
        lines.append(f"  crawl  {reason:<50} {n:5d}")
    return "\n".join(lines + failure_lines(summary, header=True))
