"""Crawl TUH-style clinical EEG trees (EDF files named ``SUBJECT_sSSS[_tTTT].edf``).

Both published layouts are recognised, plus the flat corpus layout (TUAB/TUEV style):

* v1: ``…/01_tcp_ar/NNN/SUBJECT/sSSS_DATE/SUBJECT_sSSS_tTTT.edf`` (older releases also
  ``SUBJECT_sSSS.edf``, no token);
* v2: ``…/NNN/SUBJECT/sSSS_DATE/01_tcp_ar/SUBJECT_sSSS_tTTT.edf``;
* flat: ``…/01_tcp_ar/SUBJECT_sSSS_tTTT.edf``.

The montage is the nearest ``NN_tcp_*`` folder above the file (``01_tcp_ar``,
``02_tcp_le``, ``03_tcp_ar_a``, ``04_tcp_le_a``); it goes into ``extra`` as ``montage``
(the folder name) and ``reference`` (``ar``, ``le``, ``ar_a``, ``le_a``), with ``layout``
and, when a session folder carries one, ``session_date``. ``task`` is empty and ``run`` is
the token. Files that are not EDF are ignored; EDF files whose names do not parse are
skipped with a reason.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

from brainomni.io.redact import redact
from brainomni.records import RecordingRef
from brainomni.sources.base import CrawlResult
from brainomni.sources.listing import Listing

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(
    r"^(?P<subject>[A-Za-z0-9]+)_s(?P<session>\d+)(?:_t(?P<token>\d+))?\.edf$", re.I
)
_MONTAGE_RE = re.compile(r"^\d{2}_tcp_(?P<ref>[a-z]+(?:_[a-z])?)$", re.I)
_SESSION_RE = re.compile(r"^s(?P<session>\d+)(?:_(?P<date>\d{4}(?:_\d{2}_\d{2})?))?$", re.I)
_GROUP_RE = re.compile(r"^\d{3}$")


def crawl_tuh(
    url: str,
    *,
    name: str,
    version: str,
    storage_options: Mapping[str, Any] | None = None,
    line_freq: float | None = None,
    checksums: bool = True,
) -> CrawlResult:
    """Every EDF recording of the TUH-style tree at ``url``.

    ``name`` and ``version`` identify the corpus (TUH trees carry no description file) and
    feed the stable recording id. ``line_freq`` (Hz; 60 for TUH, recorded in the USA) is
    copied to every recording.
    """
    if not name or not version:
        raise ValueError("crawl_tuh needs the corpus name and version (e.g. 'tuh_eeg', '2.0.1')")
    listing = Listing.take(url, storage_options, checksums=checksums)
    result = CrawlResult()
    for rel in listing.rel_files():
        fname = rel.rsplit("/", 1)[-1]
        if not fname.lower().endswith(".edf"):
            continue
        parsed = parse_tuh_path(rel)
        base = RecordingRef(
            uri=listing.url(listing.abs(rel)),
            format="edf",
            dataset=name,
            dataset_version=version,
            relpath=rel,
            modality="eeg",
            line_freq=line_freq,
        )
        if parsed is None:
            result.skipped.append((base, "not a TUH recording name (SUBJECT_sSSS[_tTTT].edf)"))
            continue
        fields, extra = parsed
        result.recordings.append(
            dataclasses.replace(
                base,
                **fields,
                size=listing.size([rel]),
                checksum=listing.checksum([rel]),
                extra=extra,
            )
        )
    result.__post_init__()
    logger.info(
        "crawled TUH %s (%s %s): %d recordings, %d skipped",
        redact(url),
        name,
        version,
        len(result.recordings),
        len(result.skipped),
    )
    return result


def parse_tuh_path(rel: str) -> tuple[dict[str, str], tuple[tuple[str, str], ...]] | None:
    """``({subject, session, run}, extra)`` from a TUH relative path, or ``None``.

    >>> parse_tuh_path("000/aaaaaaaa/s001_2015_12_30/01_tcp_ar/aaaaaaaa_s001_t000.edf")[0]
    {'subject': 'aaaaaaaa', 'session': '001', 'run': '000'}
    """
    parts = rel.split("/")
    m = _FILE_RE.match(parts[-1])
    if m is None:
        return None
    folders = parts[:-1]
    montage_idx = next(
        (i for i in range(len(folders) - 1, -1, -1) if _MONTAGE_RE.match(folders[i])), None
    )
    extra: list[tuple[str, str]] = []
    if montage_idx is not None:
        montage = folders[montage_idx]
        extra += [
            ("montage", montage.lower()),
            ("reference", _MONTAGE_RE.match(montage)["ref"].lower()),
        ]
        if montage_idx == len(folders) - 1 and len(folders) >= 2 and _is_session(folders[-2]):
            layout = "v2"
        elif montage_idx == len(folders) - 1:
            layout = "flat"
        else:
            layout = "v1"
        extra.append(("layout", layout))
    else:
        logger.debug("no montage folder above %s", rel)
    session_folder = next((f for f in reversed(folders) if _is_session(f)), None)
    if session_folder:
        sm = _SESSION_RE.match(session_folder)
        if sm["session"] != m["session"]:
            return None  # file and folder disagree: not a TUH name we understand
        if sm["date"]:
            extra.append(("session_date", sm["date"].replace("_", "-")))
    subject_folder = folders[folders.index(session_folder) - 1] if session_folder else None
    if subject_folder is not None and subject_folder != m["subject"]:
        return None
    fields = {"subject": m["subject"], "session": m["session"], "run": m["token"] or ""}
    return fields, tuple(extra)


def _is_session(folder: str) -> bool:
    return _SESSION_RE.match(folder) is not None
