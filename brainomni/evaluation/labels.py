"""Labels from real annotations: events (BIDS events.tsv, MNE annotations, stim channels,
TUEV ``.rec`` files) and recording/subject labels (participants.tsv, label tables, the TUAB
folder layout).

Every event onset is in seconds from the recording's **first sample** — the time axis of the
recording stores (:mod:`brainomni.clean` writes sample 0 at the first raw sample), so
an event at ``onset_s`` is store sample ``round(onset_s * 256)``. Nothing read here is
trusted: files are size-checked before being read, numbers parsed strictly, and problems
raise :class:`LabelError` (a ``ValueError``) naming the file and the fix.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_TABLE_BYTES = 64 * 1024 * 1024  # events.tsv / label tables / .rec files
MAX_EVENTS = 1_000_000

# TUEV label codes (the .rec files' last column): the corpus documentation and the BIOT /
# LaBraM TUEV makers (`make_TUEV.py`) number them 1..6 in this order.
TUEV_CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}


class LabelError(ValueError):
    """A label source that cannot be used (the message names the file and the fix)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event: onset and duration in seconds from the recording's first sample."""

    onset_s: float
    duration_s: float
    value: str


def _read_text(uri: str, storage_options: dict | None = None) -> str:
    from ..io.fs import get_fs

    fs, path = get_fs(uri, storage_options)
    size = fs.size(path)
    if size is None or size > MAX_TABLE_BYTES:
        raise LabelError(
            f"{uri}: {size} bytes, over the {MAX_TABLE_BYTES}-byte limit for a label table; "
            "split it or raise brainomni.evaluation.labels.MAX_TABLE_BYTES"
        )
    data = fs.cat_file(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"{uri}: not UTF-8 text ({exc.reason}); re-save it as UTF-8") from None


def _float(text: str, what: str) -> float | None:
    """A finite float, ``None`` for ``n/a``/empty; :class:`LabelError` otherwise."""
    t = text.strip()
    if t in ("", "n/a", "N/A", "NaN", "nan"):
        return None
    try:
        v = float(t)
    except ValueError:
        raise LabelError(f"{what}: {t[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise LabelError(f"{what}: {t[:40]!r} is not finite")
    return v


def read_table(uri: str, storage_options: dict | None = None) -> list[dict[str, str]]:
    """Rows of a TSV (``.tsv``) or CSV file with a header line, as dicts of strings."""
    text = _read_text(uri, storage_options)
    delim = "\t" if uri.lower().endswith(".tsv") else ","
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delim))
    if len(rows) > MAX_EVENTS:
        raise LabelError(f"{uri}: {len(rows)} rows, over the {MAX_EVENTS} limit")
    for i, row in enumerate(rows):
        if None in row:  # more fields than the header
            raise LabelError(f"{uri}: row {i + 2} has more fields than the header; fix the file")
    return rows


def read_events_tsv(
    uri: str, column: str = "trial_type", storage_options: dict | None = None
) -> list[Event]:
    """Events of a BIDS ``*_events.tsv`` (``onset``/``duration`` in s from the first sample,
    as BIDS defines them); ``column`` holds the event's value (``trial_type``, ``value``)."""
    rows = read_table(uri, storage_options)
    if not rows:
        return []
    if "onset" not in rows[0] or column not in rows[0]:
        raise LabelError(
            f"{uri}: needs the columns 'onset' and {column!r} (has {sorted(rows[0])}); set the "
            "recipe's event_column to the column holding the labels"
        )
    out = []
    for i, row in enumerate(rows):
        what = f"{uri} row {i + 2}"
        onset = _float(row.get("onset") or "", f"{what} onset")  # short rows: None
        if onset is None:
            continue
        dur = _float(row.get("duration", "") or "", f"{what} duration") or 0.0
        value = (row.get(column) or "").strip()
        if value in ("", "n/a"):
            continue
        out.append(Event(onset, max(0.0, dur), value))
    return out


def events_tsv_for(uri: str, storage_options: dict | None = None) -> str | None:
    """The BIDS events file beside a recording (``..._eeg.edf`` -> ``..._events.tsv``), or
    ``None``; a folder format (``.ds``) counts as a file."""
    from ..io.fs import get_fs

    stem = uri.rstrip("/")
    m = re.match(r"^(?P<base>.*)_(?:eeg|meg|ieeg)(?:\.[A-Za-z0-9.]+)?$", stem)
    if m is None:
        return None
    cand = f"{m['base']}_events.tsv"
    fs, path = get_fs(cand, storage_options)
    return cand if fs.exists(path) else None


def events_from_annotations(raw: Any) -> list[Event]:
    """The MNE annotations of ``raw`` as events from its first sample (``BAD_*``/``EDGE``
    annotations excluded: they mark unusable signal, not labels)."""
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    out = []
    for a in ann:
        desc = str(a["description"]).strip()
        if not desc or desc.upper().startswith(("BAD", "EDGE")):
            continue
        out.append(Event(float(a["onset"]) - offset, float(a["duration"]), desc))
    return out


def events_from_stim(raw: Any, stim_channel: str | None = None) -> list[Event]:
    """Events of the stim/trigger channel (MNE ``find_events``; value = the trigger code)."""
    import mne

    picks = mne.pick_types(raw.info, stim=True)
    if stim_channel is None and len(picks) == 0:
        return []
    try:
        events = mne.find_events(
            raw, stim_channel=stim_channel, shortest_event=1, consecutive=True, verbose="error"
        )
    except ValueError as exc:  # MNE's word for a stim channel it cannot decode
        where = (raw.filenames[0] if raw.filenames else None) or "recording"
        raise LabelError(
            f"{where}: stim channel unreadable ({exc}); use BIDS events.tsv or annotations"
        ) from None
    sfreq = float(raw.info["sfreq"])
    return [Event((int(s) - raw.first_samp) / sfreq, 0.0, str(int(v))) for s, _, v in events]


def read_tuev_rec(uri: str, storage_options: dict | None = None) -> list[Event]:
    """Events of a TUEV ``.rec`` file: lines ``channel,start_s,stop_s,code`` (code 1..6, see
    :data:`TUEV_CODES`). The same event is marked once per channel it is seen on; we keep it
    once per (start, stop, code)."""
    text = _read_text(uri, storage_options)
    seen: set[tuple[float, float, int]] = set()
    out = []
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        what = f"{uri} line {i + 1}"
        if len(parts) != 4:
            raise LabelError(f"{what}: expected 'channel,start,stop,code', got {line[:60]!r}")
        start = _float(parts[1], f"{what} start")
        stop = _float(parts[2], f"{what} stop")
        code = _float(parts[3], f"{what} code")
        if start is None or stop is None or code is None or code not in TUEV_CODES:
            raise LabelError(f"{what}: start/stop/code missing or code not in 1..6")
        key = (start, stop, int(code))
        if key in seen:
            continue
        seen.add(key)
        out.append(Event(start, max(0.0, stop - start), TUEV_CODES[int(code)]))
    if len(out) > MAX_EVENTS:
        raise LabelError(f"{uri}: more than {MAX_EVENTS} events")
    return sorted(out, key=lambda e: (e.onset_s, e.value))


def tuev_rec_for(uri: str) -> str:
    """The ``.rec`` file beside a TUEV EDF (same stem)."""
    return re.sub(r"\.edf$", ".rec", uri, flags=re.I)


_TUAB_RE = re.compile(r"(?:^|/)(?P<split>train|eval)/(?P<label>normal|abnormal)/", re.I)


def tuab_label(relpath: str) -> tuple[str, str] | None:
    """``(label, split)`` of a TUAB file from its path (``…/train/abnormal/01_tcp_ar/…``):
    label ``normal``/``abnormal``, split ``train``/``eval``; ``None`` when the path has no
    such folders."""
    m = _TUAB_RE.search("/" + relpath)
    return (m["label"].lower(), m["split"].lower()) if m else None


_SPLIT_RE = re.compile(r"(?:^|/)(?P<split>train|eval|dev)/", re.I)


def official_split(relpath: str) -> str | None:
    """``train``/``eval`` from a TUH path's split folder (TUEV ``…/train/…``), else ``None``
    (``dev`` counts as ``eval``, the held-out side)."""
    m = _SPLIT_RE.search("/" + relpath)
    if m is None:
        return None
    s = m["split"].lower()
    return "eval" if s == "dev" else s


def read_label_table(
    uri: str, key: str, column: str, storage_options: dict | None = None
) -> dict[str, str]:
    """``{key value: label}`` from a TSV/CSV label table (``key`` = ``subject`` or
    ``recording``); a key given twice with different labels is an error."""
    rows = read_table(uri, storage_options)
    if rows and (key not in rows[0] or column not in rows[0]):
        raise LabelError(
            f"{uri}: needs the columns {key!r} and {column!r} (has {sorted(rows[0])}); fix the "
            "table or the recipe's label_key/label_column"
        )
    out: dict[str, str] = {}
    for i, row in enumerate(rows):
        k, v = (row.get(key) or "").strip(), (row.get(column) or "").strip()
        if not k or not v:
            continue
        k = k.removeprefix("sub-") if key == "subject" else k
        if k in out and out[k] != v:
            raise LabelError(f"{uri} row {i + 2}: {key} {k!r} has two labels ({out[k]!r}, {v!r})")
        out[k] = v
    return out


def participant_label(extra: Iterable[tuple[str, str]], column: str) -> str | None:
    """The ``participants.tsv`` value of ``column`` the BIDS crawl attached to a recording
    (``RecordingRef.extra`` holds ``("participants.<column>", value)``)."""
    want = f"participants.{column}"
    for k, v in extra:
        if k == want:
            return str(v).strip()
    return None
