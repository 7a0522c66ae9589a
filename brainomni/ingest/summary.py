"""The end-of-job summary: counts by outcome, hours by dataset/modality/device, failures by reason."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from brainomni.storage import atomic_write_bytes, join_url

from .ledger import ALREADY_DONE, LedgerRow

SUMMARY_FILE = "summary.json"


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
        "crawl_skipped_by_reason": dict(sorted((crawl_skipped or {}).items())),
        "bytes_in": sum(r.bytes_in or 0 for r in rows),
        "bytes_out": sum(r.bytes_out or 0 for r in rows if r.outcome == "ok"),
        **({"run": dict(run)} if run else {}),
    }


def write_summary(dest: str, summary: Mapping[str, Any], storage_options=None) -> str:
    url = join_url(dest, SUMMARY_FILE)
    body = json.dumps(summary, indent=1, sort_keys=True, default=str).encode()
    atomic_write_bytes(url, body, storage_options)
    return url


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
    run = summary.get("run") or {}
    if run:
        lines.append(
            "run: " + "  ".join(f"{k}={v}" for k, v in run.items() if not isinstance(v, dict))
        )
    return "\n".join(lines)
